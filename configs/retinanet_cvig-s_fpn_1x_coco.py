# RetinaNet + FPN with a ClusterViG-S backbone: the Mask R-CNN recipe
# (mask-rcnn_cvig-s_fpn_1x_coco.py) on mmdet's one-stage detector, unchanged otherwise.
_base_ = [
    'mmdet::_base_/models/retinanet_r50_fpn.py',
    'mmdet::_base_/datasets/coco_detection.py',
    './_base_/schedules/adamw_cvig_1x.py',
]

pretrained = 'work_dirs/cvig-s_8xb128_in1k/epoch_300.pth'  # configs/cvig-s_8xb128_in1k.py
model = dict(
    data_preprocessor=dict(mean=[127.5] * 3, std=[127.5] * 3),
    backbone=dict(
        _delete_=True,
        type='ClusterViG',
        arch='small',
        out_indices=-1,
        # RetinaNet starts at stride 8: no stride-4 level (mmdet's FPN would build it
        # and leave it unused); FPN adds strides 64 and 128 on top.
        pyramid=dict(scales=(2, 1, 0.5)),
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', prefix='backbone.', checkpoint=pretrained)),
    neck=dict(in_channels=[160, 320, 320], start_level=0))
