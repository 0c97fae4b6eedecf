# Semantic FPN with a ClusterViG-S backbone on ADE20K (150 classes), the protocol of PVT
# and PoolFormer for backbones under Semantic FPN: ImageNet-1k initialisation, 512x512
# crops, AdamW lr 2e-4 with weight decay 1e-4, poly decay over 40k iterations, 8 GPUs x
# 4 images. Data pipeline, FPN, FPNHead and mIoU evaluation are mmseg's own.
_base_ = [
    'mmseg::_base_/models/fpn_r50.py',
    'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_40k.py',
    './_base_/models/cvig-s_pyramid.py',
]
custom_imports = dict(imports=['mmcvig'], allow_failed_imports=False)

crop_size = (512, 512)
data_preprocessor = dict(
    _base_.img_norm_cfg,  # as the ImageNet training, not mmseg's ResNet statistics
    # Training pads every crop to 512x512: the random resize leaves some images smaller.
    size=crop_size,
    # Whole-image testing pads each image to a multiple of 32, and mmseg crops that
    # padding off the logits before resizing them to the original image: the stride-4
    # logits then lie on the image's own pixel grid, whatever its size.
    test_cfg=dict(size_divisor=32))
model = dict(
    data_preprocessor=data_preprocessor,
    pretrained=None,  # mmseg's ResNet checkpoint; ClusterViG's comes with the backbone
    # The CViG-S backbone of the detectors: simple pyramid (strides 4, 8, 16, 32),
    # `pad_aware=True` (the padding above stays out of k-means, k-NN and the convs),
    # stochastic depth 0.1, the ImageNet checkpoint through init_cfg.
    backbone=_base_.backbone,
    neck=dict(in_channels=_base_.fpn_in_channels),
    decode_head=dict(num_classes=150))

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-4, betas=(0.9, 0.999), weight_decay=1e-4),
    # No decay on norms, biases and the position embedding (as the ImageNet training).
    # Layer-wise lr decay (ViTDet's; an option, not tuned for ClusterViG) on this or any
    # ClusterViG segmentation config:
    #   --cfg-options optim_wrapper.constructor=LayerDecayOptimWrapperConstructor \
    #       optim_wrapper.paramwise_cfg.layer_decay_rate=0.7
    paramwise_cfg=dict(
        norm_decay_mult=0.,
        bias_decay_mult=0.,
        custom_keys={'pos_embed': dict(decay_mult=0.)}))
# Poly decay to 0 (power 0.9), no warm-up, as PoolFormer's Semantic FPN.
param_scheduler = [
    dict(type='PolyLR', power=0.9, eta_min=0., begin=0, end=40000, by_epoch=False)
]

# The lr above is for 32 images per step (8 GPUs x 4); `--auto-scale-lr` rescales it
# linearly for another total.
train_dataloader = dict(batch_size=4)
auto_scale_lr = dict(enable=False, base_batch_size=32)
# ClusterViG normalises with BatchNorm everywhere: in distributed runs its BNs take their
# statistics over all 32 images of a step, as mmseg's SyncBN neck and head do.
sync_bn = 'torch'
