# Semantic FPN with ClusterViG-B: the CViG-S recipe with the base backbone and more
# stochastic depth for the larger model (as the B detectors).
_base_ = './fpn_cvig-s_8xb4-40k_ade20k-512x512.py'

channels = 640  # C of arch 'base'; FPN levels as in configs/_base_/models/cvig-s_pyramid.py
pretrained = 'work_dirs/cvig-b_8xb128_in1k/epoch_300.pth'  # configs/cvig-b_8xb128_in1k.py
model = dict(
    backbone=dict(arch='base', drop_path_rate=0.2, init_cfg=dict(checkpoint=pretrained)),
    neck=dict(in_channels=[channels // 4, channels // 2, channels, channels]))
