# configs/cvig-b_8xb128_in1k.py without the teacher: both classifiers of the head are
# trained on the labels (the same as --cfg-options model.teacher=None). At test time
# their logits are averaged; expect a lower top-1 than the paper's distilled one.
_base_ = './cvig-b_8xb128_in1k.py'

model = dict(teacher=None, teacher_ckpt=None)
