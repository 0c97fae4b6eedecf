# Semantic FPN with ClusterViG-Ti: the CViG-S recipe with the tiny backbone.
_base_ = './fpn_cvig-s_8xb4-40k_ade20k-512x512.py'

channels = 192  # C of arch 'tiny'; FPN levels as in configs/_base_/models/cvig-s_pyramid.py
pretrained = 'work_dirs/cvig-ti_8xb128_in1k/epoch_300.pth'  # configs/cvig-ti_8xb128_in1k.py
model = dict(
    backbone=dict(arch='tiny', init_cfg=dict(checkpoint=pretrained)),
    neck=dict(in_channels=[channels // 4, channels // 2, channels, channels]))
