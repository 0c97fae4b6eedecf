# Cascade Mask R-CNN + FPN with a ClusterViG-S backbone: the Mask R-CNN recipe
# (mask-rcnn_cvig-s_fpn_1x_coco.py) on mmdet's cascade, unchanged otherwise.
_base_ = [
    'mmdet::_base_/models/cascade-mask-rcnn_r50_fpn.py',
    'mmdet::_base_/datasets/coco_instance.py',
    './_base_/schedules/adamw_cvig_1x.py',
    './_base_/models/cvig-s_pyramid.py',
]

model = dict(
    data_preprocessor=_base_.img_norm_cfg,
    backbone=_base_.backbone,
    neck=dict(in_channels=_base_.fpn_in_channels))
