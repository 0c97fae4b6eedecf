# ClusterViG-B on ImageNet-1k: the CViG-Ti recipe (see that config) with the B arch
# (16 blocks, C=640, MLP groups 4; paper Table III).
_base_ = './cvig-ti_8xb128_in1k.py'

model = dict(backbone=dict(arch='base'), head=dict(in_channels=640))
