# ClusterViG-S on ImageNet-1k: the CViG-Ti recipe (see that config) with the S arch
# (16 blocks, C=320, MLP groups 4; paper Table III).
_base_ = './cvig-ti_8xb128_in1k.py'

model = dict(backbone=dict(arch='small'), head=dict(in_channels=320))
