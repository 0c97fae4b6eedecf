# The CViG-S Semantic FPN recipe, shrunk to train from scratch in minutes on a 2-core CPU
# on the toy scenes of tools/misc/make_toy_seg.py (what `make demo-seg` runs). Sizes
# change: the 4-block, 64-channel ClusterViG of the toy detector, a 64-channel FPN and
# FPNHead, whole images of 96 to 160 px (no crops), a short schedule with an lr for
# training from scratch. Evaluation is mmseg's IoUMetric (mIoU, mAcc, aAcc).
_base_ = '../fpn_cvig-s_8xb4-40k_ade20k-512x512.py'
# toy_seg registers ToySegDataset in mmseg's DATASETS; seg_checks the data check hook.
custom_imports = dict(
    imports=['mmcvig', 'mmcvig.datasets.toy_seg', 'mmcvig.datasets.seg_checks'],
    allow_failed_imports=False)

num_classes = 5  # mmcvig.datasets.toy_seg.CLASSES, background included
channels = 64
crop_size = None  # whole images: they are small, and of mixed sizes and orientations
model = dict(
    # Batches of mixed sizes are padded at the bottom and right to a multiple of 32
    # (training and testing); `pad_aware` keeps the padding out of the backbone, and the
    # padded labels (255) out of the loss.
    data_preprocessor=dict(size=None, size_divisor=32, test_cfg=dict(size_divisor=32)),
    backbone=dict(
        # `_delete_`: replaces the base's arch name by a dict.
        arch=dict(_delete_=True, num_blocks=4, channels=channels, num_clusters=4, groups=1,
                  stride=16),
        img_size=128,
        drop_path_rate=0.,
        init_cfg=None),  # from scratch: no pretrained classifier here
    # The pyramid's levels from `channels`, as in configs/_base_/models/cvig-s_pyramid.py.
    neck=dict(in_channels=[channels // 4, channels // 2, channels, channels],
              out_channels=channels),
    decode_head=dict(in_channels=[channels] * 4, channels=channels, num_classes=num_classes))

dataset_type = 'ToySegDataset'
data_root = 'data/toy_seg/'
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
# `tools/test.py --tta`: mmseg's SegTTAModel (tta_model of the base) averages the
# predictions of the image and its mirror image, at its size and 1.25x.
tta_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(
        type='TestTimeAug',
        transforms=[
            [dict(type='Resize', scale_factor=r, keep_ratio=True) for r in (1.0, 1.25)],
            [dict(type='RandomFlip', prob=0., direction='horizontal'),
             dict(type='RandomFlip', prob=1., direction='horizontal')],
            [dict(type='LoadAnnotations')],
            [dict(type='PackSegInputs')],
        ]),
]
# One loader worker: the machine has 2 cores, and the model needs them.
train_dataloader = dict(
    batch_size=8,
    num_workers=1,
    dataset=dict(type=dataset_type, data_root=data_root,
                 data_prefix=dict(img_path='img_dir/train', seg_map_path='ann_dir/train'),
                 pipeline=train_pipeline))
# One image per batch: mmseg's data preprocessor tests batches of one size only.
val_dataloader = dict(
    batch_size=1,
    num_workers=1,
    dataset=dict(type=dataset_type, data_root=data_root,
                 data_prefix=dict(img_path='img_dir/val', seg_map_path='ann_dir/val'),
                 pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator

# Label maps checked before training and testing (mmcvig/datasets/seg_checks.py).
custom_hooks = [dict(type='SegDataCheckHook')]

max_iters = 300
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
optim_wrapper = dict(optimizer=dict(lr=2e-3))  # 10x the fine-tuning lr: from scratch
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=30),
    dict(type='PolyLR', power=0.9, eta_min=0., by_epoch=False, begin=30, end=max_iters),
]
auto_scale_lr = dict(base_batch_size=8)

default_hooks = dict(
    logger=dict(interval=20),
    checkpoint=dict(by_epoch=False, interval=max_iters, max_keep_ckpts=1))
log_processor = dict(window_size=20)
randomness = dict(seed=0)
