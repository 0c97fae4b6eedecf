# ClusterViG-B-dagger on ImageNet-1k: CViG-B at twice the token resolution (stem stride
# 8, so 28x28 tokens from the same 224x224 images, and kappa 6; paper Table III), with
# the CViG-Ti recipe (see that config).
_base_ = './cvig-ti_8xb128_in1k.py'

model = dict(backbone=dict(arch='base-hr'), head=dict(in_channels=640))
