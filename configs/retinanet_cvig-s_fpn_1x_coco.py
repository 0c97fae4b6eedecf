# RetinaNet + FPN with a ClusterViG-S backbone: the Mask R-CNN recipe
# (mask-rcnn_cvig-s_fpn_1x_coco.py) on mmdet's one-stage detector, unchanged otherwise.
_base_ = [
    'mmdet::_base_/models/retinanet_r50_fpn.py',
    'mmdet::_base_/datasets/coco_detection.py',
    './_base_/schedules/adamw_cvig_1x.py',
    './_base_/models/cvig-s_pyramid.py',
]

model = dict(
    data_preprocessor=_base_.img_norm_cfg,
    # RetinaNet starts at stride 8: no stride-4 level (mmdet's FPN would build it and
    # leave it unused); FPN adds strides 64 and 128 on top.
    backbone=dict(_base_.backbone, pyramid=dict(scales=_base_.pyramid_scales[1:])),
    neck=dict(in_channels=_base_.fpn_in_channels[1:], start_level=0))
