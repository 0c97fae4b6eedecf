# The teacher of the toy distillation run (tools/demo_cls.sh): a narrow ResNet-18 (base
# width 16, ~0.7 M parameters) trained from scratch on the toy dataset with the student's
# data, pipeline and schedule (cvig-mini_toy-cls.py), for 20 epochs instead of 10. A
# convnet, as RegNetY is for ClusterViG on ImageNet.
#
# mmpretrain's CIFAR stem (one 3x3 conv, no max-pool) with a stride-2 first stage: 32x32
# maps in stage 1, where the ImageNet stem (7x7 stride 2 + max-pool) leaves 16x16 and
# loses the thin stripes and checkers (75.3 % val top-1 at 10 epochs, against 98.3 %
# with this one at 20; ~2 min on one busy core).
_base_ = './cvig-mini_toy-cls.py'

model = dict(
    _delete_=True,
    type='ImageClassifier',
    data_preprocessor={{_base_.model.data_preprocessor}},
    backbone=dict(type='ResNet_CIFAR', depth=18, stem_channels=16, base_channels=16,
                  strides=(2, 2, 2, 2)),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(type='LinearClsHead', num_classes={{_base_.num_classes}}, in_channels=128,
              loss=dict(type='CrossEntropyLoss'), topk=(1, )))
optim_wrapper = dict(paramwise_cfg=dict(_delete_=True, norm_decay_mult=0.,
                                        bias_decay_mult=0.))
train_cfg = dict(max_epochs=20, val_interval=10)
