# Mask R-CNN + FPN with a ClusterViG-S backbone on COCO, the paper's setting (Sec. V-B,
# Table V: 47.4 box AP, 43.4 mask AP): ImageNet-1k initialisation, AdamW lr 2e-4,
# 12 epochs at 1333x800, 8 GPUs x 2 images.
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    'mmdet::_base_/datasets/coco_instance.py',
    './_base_/schedules/adamw_cvig_1x.py',
    './_base_/models/cvig-s_pyramid.py',
]

model = dict(
    data_preprocessor=_base_.img_norm_cfg,
    backbone=_base_.backbone,
    neck=dict(in_channels=_base_.fpn_in_channels))
