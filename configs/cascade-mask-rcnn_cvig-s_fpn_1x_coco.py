# Cascade Mask R-CNN + FPN with a ClusterViG-S backbone: the Mask R-CNN recipe
# (mask-rcnn_cvig-s_fpn_1x_coco.py) on mmdet's cascade, unchanged otherwise.
_base_ = [
    'mmdet::_base_/models/cascade-mask-rcnn_r50_fpn.py',
    'mmdet::_base_/datasets/coco_instance.py',
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
        pyramid=dict(),
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', prefix='backbone.', checkpoint=pretrained)),
    neck=dict(in_channels=[80, 160, 320, 320]))
