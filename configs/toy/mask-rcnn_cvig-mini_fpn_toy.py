# The CViG-S Mask R-CNN recipe, shrunk to train from scratch in minutes on a 2-core CPU
# on the toy shapes of tools/misc/make_toy_coco.py (what `make demo` runs). Only sizes
# change: a 4-block, 64-channel ClusterViG, 64-channel FPN and heads, images at most
# 256 px, fewer RPN/RoI samples, anchors half as large, a short schedule with an lr for
# training from scratch. Evaluation is mmdet's CocoMetric (box and mask AP).
_base_ = '../mask-rcnn_cvig-s_fpn_1x_coco.py'
custom_imports = dict(imports=['mmcvig', 'mmcvig.datasets'])

num_classes = 4  # mmcvig.datasets.toy_coco.CLASSES
channels = 64
model = dict(
    backbone=dict(
        # `_delete_`: replaces the base's arch name by a dict.
        arch=dict(_delete_=True, num_blocks=4, channels=channels, num_clusters=4, groups=1,
                  stride=16),
        img_size=256,
        drop_path_rate=0.,
        init_cfg=None),  # from scratch: no pretrained classifier here
    # The pyramid's levels from `channels`, as in configs/_base_/models/cvig-s_pyramid.py.
    neck=dict(in_channels=[channels // 4, channels // 2, channels, channels],
              out_channels=channels),
    rpn_head=dict(
        in_channels=channels,
        feat_channels=channels,
        # Toy objects are 10 to 150 px: anchors from 16 px (stride 4) instead of 32.
        anchor_generator=dict(scales=[4])),
    roi_head=dict(
        # RoIAlign's backward on the CPU costs as many samples as a RoI spans: 2x2 per bin.
        bbox_roi_extractor=dict(out_channels=channels, roi_layer=dict(sampling_ratio=2)),
        bbox_head=dict(in_channels=channels, fc_out_channels=256, num_classes=num_classes),
        mask_roi_extractor=dict(out_channels=channels, roi_layer=dict(sampling_ratio=2)),
        # Two of the mask head's four 3x3 convs: they run on every positive RoI.
        mask_head=dict(num_convs=2, in_channels=channels, conv_out_channels=channels,
                       num_classes=num_classes)),
    train_cfg=dict(
        rpn=dict(sampler=dict(num=64)),
        rpn_proposal=dict(nms_pre=500, max_per_img=200),
        rcnn=dict(sampler=dict(num=64))),
    test_cfg=dict(
        rpn=dict(nms_pre=500, max_per_img=200),
        rcnn=dict(max_per_img=50)))

dataset_type = 'ToyCocoDataset'
data_root = 'data/toy_coco/'
scale = (256, 256)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
# One loader worker: the machine has 2 cores, and the model needs them.
train_dataloader = dict(
    batch_size=4,
    num_workers=1,
    dataset=dict(type=dataset_type, data_root=data_root,
                 ann_file='annotations/instances_train.json',
                 data_prefix=dict(img='train/'), pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=4,
    num_workers=1,
    dataset=dict(type=dataset_type, data_root=data_root,
                 ann_file='annotations/instances_val.json',
                 data_prefix=dict(img='val/'), pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
test_evaluator = val_evaluator

# 4 epochs of 60 iterations (240 images, 4 per step), lr x0.1 for the last one.
max_epochs = 4
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
optim_wrapper = dict(optimizer=dict(lr=1e-3))  # 5x the fine-tuning lr: from scratch
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type='MultiStepLR', by_epoch=True, begin=0, end=max_epochs, milestones=[3],
         gamma=0.1),
]
auto_scale_lr = dict(base_batch_size=4)

default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=dict(interval=max_epochs, max_keep_ckpts=1))
log_processor = dict(window_size=10)
randomness = dict(seed=0)
