# Mask R-CNN + FPN with a ClusterViG-S backbone on COCO, the paper's setting (Sec. V-B,
# Table V: 47.4 box AP, 43.4 mask AP): ImageNet-1k initialisation, AdamW lr 2e-4,
# 12 epochs at 1333x800, 8 GPUs x 2 images.
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    'mmdet::_base_/datasets/coco_instance.py',
    './_base_/schedules/adamw_cvig_1x.py',
]

# No public ClusterViG weights exist: train the ImageNet-1k classifier first with
# `tools/dist_train.sh configs/cvig-s_8xb128_in1k.py 8` and point this at its last
# checkpoint (or pass `--cfg-options model.backbone.init_cfg.checkpoint=...`). Only its
# `backbone.` weights are loaded; the pyramid adapter starts from scratch. Its 14x14
# pos_embed is resized bicubically to every input's token grid at run time.
pretrained = 'work_dirs/cvig-s_8xb128_in1k/epoch_300.pth'

model = dict(
    # The ImageNet training normalises RGB to [-1, 1] (ViG's mean = std = 127.5).
    data_preprocessor=dict(mean=[127.5] * 3, std=[127.5] * 3),
    backbone=dict(
        _delete_=True,
        type='ClusterViG',
        arch='small',
        # All four levels come from the last block through the simple pyramid (2x2
        # transposed convs to strides 4 and 8, identity at 16, max-pool to 32): ViTDet
        # found this as good as tapping 4 intermediate blocks, and every level then gets
        # the full depth of the isotropic network.
        out_indices=-1,
        pyramid=dict(),
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', prefix='backbone.', checkpoint=pretrained)),
    neck=dict(in_channels=[80, 160, 320, 320]))
