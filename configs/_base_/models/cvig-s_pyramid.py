# The ClusterViG-S backbone of the COCO detectors, and what comes with it: the simple
# pyramid that turns its stride-16 maps into FPN levels, the FPN in_channels that follow
# from them, the input normalisation of its ImageNet training and that checkpoint.
#
# mmengine refuses a key that two bases both define, and mmdet's detector bases define
# `model`: so this file defines variables, and a detector config that lists it in
# `_base_` puts them in place (`_base_.<name>` reads a base's variable):
#     model = dict(data_preprocessor=_base_.img_norm_cfg, backbone=_base_.backbone,
#                  neck=dict(in_channels=_base_.fpn_in_channels))
# Another size changes `arch` and the neck's in_channels, from its own `channels` by the
# rule below (tests/test_detection.py checks every config against the built backbone).
# These variables stay in every derived config as they are here (mmengine keeps every
# top-level name); what a detector builds is its `model`.

channels = 320  # C of arch 'small' (ClusterViG.arch_settings, paper Table III)
# All levels come from the last block through the simple pyramid (2x2 transposed convs
# to strides 4 and 8, identity at 16, max-pool to 32): ViTDet found this as good as
# tapping 4 intermediate blocks, and every level then gets the full depth of the
# isotropic network.
pyramid_scales = (4, 2, 1, 0.5)
# One per pyramid level: each 2x upsampling halves the channels, identity and pooling
# keep C.
fpn_in_channels = [channels // 4, channels // 2, channels, channels]

# No public ClusterViG weights exist: train the ImageNet-1k classifier first with
# `tools/dist_train.sh configs/cvig-s_8xb128_in1k.py 8` and point this at its last
# checkpoint (or pass `--cfg-options model.backbone.init_cfg.checkpoint=...`). Only its
# `backbone.` weights are loaded; the pyramid adapter starts from scratch. Its 14x14
# pos_embed is resized bicubically to every image's token grid at run time.
pretrained = 'work_dirs/cvig-s_8xb128_in1k/epoch_300.pth'

# The ImageNet training normalises RGB to [-1, 1] (ViG's mean = std = 127.5). No 8-bit
# pixel normalises to exactly 0 then, which is what lets `pad_aware` tell mmdet's zero
# batch padding from the image (mmcvig/models/backbones/padding.py).
img_norm_cfg = dict(mean=[127.5] * 3, std=[127.5] * 3)

backbone = dict(
    _delete_=True,  # replaces the ResNet of mmdet's detector base, keys and all
    type='ClusterViG',
    arch='small',
    out_indices=-1,
    pyramid=dict(scales=pyramid_scales),
    # mmdet pads every batch to its largest image: without this, the padded tokens join
    # k-means, k-NN and the convolutions, and an image's detections depend on its batch
    # mates.
    pad_aware=True,
    drop_path_rate=0.1,
    init_cfg=dict(type='Pretrained', prefix='backbone.', checkpoint=pretrained))
