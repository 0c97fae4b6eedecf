# UperNet (+ an auxiliary FCN head) with a ClusterViG-S backbone on ADE20K (150 classes),
# Swin's protocol (mmseg's swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512):
# ImageNet-1k initialisation, 512x512 crops, AdamW lr 6e-5 with weight decay 0.01, linear
# warm-up over 1,500 iterations then linear (poly, power 1) decay to 0 at 160k, 8 GPUs x
# 2 images. Data pipeline, heads and mIoU evaluation are mmseg's own.
_base_ = [
    'mmseg::_base_/models/upernet_swin.py',
    'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_160k.py',
    './_base_/models/cvig-s_pyramid.py',
]
custom_imports = dict(imports=['mmcvig'], allow_failed_imports=False)

crop_size = (512, 512)
# Normalisation of the ImageNet training; training pads to the crop, whole-image testing
# to a multiple of 32 (cropped off the logits again), as in fpn_cvig-s_8xb4-40k_ade20k-512x512.py.
data_preprocessor = dict(_base_.img_norm_cfg, size=crop_size, test_cfg=dict(size_divisor=32))
model = dict(
    data_preprocessor=data_preprocessor,
    # The CViG-S backbone of the detectors (configs/_base_/models/cvig-s_pyramid.py) in
    # place of Swin: simple pyramid, `pad_aware=True`, the ImageNet checkpoint.
    backbone=_base_.backbone,
    # UperNet takes the four pyramid levels (strides 4, 8, 16, 32) as they come.
    decode_head=dict(in_channels=_base_.fpn_in_channels, num_classes=150),
    # The auxiliary FCN head on the stride-16 level, the isotropic network's own map.
    auxiliary_head=dict(in_channels=_base_.channels, in_index=2, num_classes=150))

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01),
    # No decay on norms, biases and the position embedding (as the ImageNet training).
    # Layer-wise lr decay (ViTDet's; an option, not tuned for ClusterViG):
    #   --cfg-options optim_wrapper.constructor=LayerDecayOptimWrapperConstructor \
    #       optim_wrapper.paramwise_cfg.layer_decay_rate=0.7
    paramwise_cfg=dict(
        norm_decay_mult=0.,
        bias_decay_mult=0.,
        custom_keys={'pos_embed': dict(decay_mult=0.)}))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', power=1.0, eta_min=0., begin=1500, end=160000, by_epoch=False),
]

# The lr above is for 16 images per step (8 GPUs x 2); `--auto-scale-lr` rescales it
# linearly for another total.
train_dataloader = dict(batch_size=2)
auto_scale_lr = dict(enable=False, base_batch_size=16)
# ClusterViG's BNs take their statistics over all 16 images of a step in distributed
# runs, as mmseg's SyncBN heads do.
sync_bn = 'torch'
