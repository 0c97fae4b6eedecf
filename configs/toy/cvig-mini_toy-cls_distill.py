# cvig-mini_toy-cls.py distilled, DeiT style, from the toy ResNet-18 teacher
# (resnet18-mini_toy-cls.py, trained first): the same student, data and schedule; its
# distillation classifier learns the teacher's argmax instead of the labels (weight 0.5
# each). At test time the two classifiers are averaged. tools/demo_cls.sh trains the
# teacher, then passes its checkpoint with --cfg-options model.teacher_ckpt=...
_base_ = './cvig-mini_toy-cls.py'

model = dict(
    type='HardDistillationClassifier',
    # Any mmpretrain classifier config: its `model` is built, frozen, and loaded from
    # teacher_ckpt; its data preprocessor normalises as the student's.
    teacher='{{fileDirname}}/resnet18-mini_toy-cls.py',
    teacher_ckpt='work_dirs/resnet18-mini_toy-cls/epoch_20.pth',
    distill_weight=0.5)
