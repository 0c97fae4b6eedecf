"""DeiT-style hard distillation (mmcvig.models.HardDistillationClassifier), on the toy
configs: the mini ClusterViG student of configs/toy/cvig-mini_toy-cls_distill.py and its
ResNet-18 teacher (configs/toy/resnet18-mini_toy-cls.py) with random weights saved as a
real checkpoint file, 64x64 inputs. The timm teacher of the ImageNet configs is tested in
tests/test_classification.py.
"""
import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from mmengine.runner import Runner
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

import mmcvig  # noqa: F401  (registers the classifier, the head and ClusterViG)

ROOT = Path(__file__).resolve().parents[1]
STUDENT = ROOT / 'configs' / 'toy' / 'cvig-mini_toy-cls_distill.py'
TEACHER = ROOT / 'configs' / 'toy' / 'resnet18-mini_toy-cls.py'
NUM_CLASSES = 6


pytestmark = pytest.mark.usefixtures('one_thread')


@pytest.fixture(scope='module')
def teacher_ckpt(tmp_path_factory):
    """The toy teacher with random weights, saved as mmengine's Runner saves a model."""
    init_default_scope('mmpretrain')
    torch.manual_seed(1)
    teacher = MODELS.build(Config.fromfile(str(TEACHER)).model)
    path = tmp_path_factory.mktemp('teacher') / 'teacher.pth'
    torch.save(dict(meta=dict(epoch=1), state_dict=teacher.state_dict()), path)
    return path


def student_cfg(teacher_ckpt, **model):
    cfg = Config.fromfile(str(STUDENT))
    init_default_scope('mmpretrain')
    cfg.model.teacher_ckpt = None if teacher_ckpt is None else str(teacher_ckpt)
    cfg.model.update(model)
    return cfg


def build(cfg, init=True):
    torch.manual_seed(0)
    model = MODELS.build(copy.deepcopy(cfg.model))
    if init:
        model.init_weights()  # as the Runner does before training: loads the teacher
    return model


def batch(num=6, size=64):
    gen = torch.Generator().manual_seed(0)
    inputs = [torch.randint(0, 256, (3, size, size), dtype=torch.uint8, generator=gen)
              for _ in range(num)]
    samples = [DataSample().set_gt_label(i % NUM_CLASSES) for i in range(num)]
    return dict(inputs=inputs, data_samples=samples)


def capture_input(module, store):
    return module.register_forward_pre_hook(lambda m, args: store.append(args[0].detach()))


def capture_output(module, store):
    return module.register_forward_hook(lambda m, args, out: store.append(out.detach()))


def renormalising_teacher():
    """The toy teacher with another normalisation and channel order than the student's:
    the conversion constants are not the identity."""
    teacher = Config.fromfile(str(TEACHER)).model
    teacher.data_preprocessor = dict(mean=[123.675, 116.28, 103.53],
                                     std=[58.395, 57.12, 57.375], to_rgb=False)
    return teacher


def floating(module):
    """The floating-point parameters and buffers of ``module``."""
    return [t for t in (*module.parameters(), *module.buffers()) if t.is_floating_point()]


# -------------------------------------------------------------------------------- loss
def test_distillation_loss_is_cross_entropy_against_the_teacher_argmax(teacher_ckpt):
    """With Mixup in the data preprocessor: the teacher sees the mixed batch the student
    sees, ``loss_dist`` is 0.5 x CE(fc_dist, teacher argmax) and ``loss`` 0.5 x the soft
    cross-entropy of ``fc`` against the mixed labels."""
    cfg = student_cfg(teacher_ckpt, train_cfg=dict(augments=[dict(type='Mixup', alpha=1.)]))
    model = build(cfg).train()
    teacher_in, student_in, logits, logits_dist = [], [], [], []
    capture_input(model.teacher, teacher_in)
    capture_input(model.backbone, student_in)
    capture_output(model.head.fc, logits)
    capture_output(model.head.fc_dist, logits_dist)

    torch.manual_seed(0)
    data = model.data_preprocessor(batch(), training=True)
    plain = model.data_preprocessor(batch(), training=False)['inputs']
    assert not torch.allclose(data['inputs'], plain)  # mixed
    # A random teacher gives one class to every noise image: centre its logits on this
    # batch, so that its argmax varies.
    with torch.no_grad():
        feats = model.teacher.extract_feat(data['inputs'])[-1]
        fc = model.teacher.head.fc
        fc.weight.normal_()
        fc.bias.copy_(-fc.weight @ feats.mean(0))
    losses = model(**data, mode='loss')

    # The same tensor for both: identical normalisation, so no conversion.
    assert torch.equal(teacher_in[0], data['inputs'])
    assert torch.equal(student_in[0], data['inputs'])
    with torch.no_grad():
        teacher_labels = model.teacher(data['inputs'], mode='tensor').argmax(1)
    assert len(set(teacher_labels.tolist())) > 1  # not a constant target
    expected_dist = 0.5 * F.cross_entropy(logits_dist[0], teacher_labels)
    torch.testing.assert_close(losses['loss_dist'], expected_dist)
    scores = torch.stack([s.gt_score for s in data['data_samples']])
    expected_cls = 0.5 * -(scores * logits[0].log_softmax(1)).sum(1).mean()
    torch.testing.assert_close(losses['loss'], expected_cls)
    assert losses['loss_dist'].requires_grad and losses['loss'].requires_grad


def test_teacher_gets_its_own_normalisation_of_the_same_pixels(teacher_ckpt):
    """A teacher trained with other mean/std and channel order gets the student's
    (mixed) pixels normalised as its own data preprocessor would normalise them."""
    model = build(student_cfg(teacher_ckpt, teacher=renormalising_teacher()))
    seen = []
    capture_input(model.teacher, seen)
    data = batch()
    student = model.data_preprocessor(data)['inputs']
    model.teacher_labels(student)
    expected = model.teacher.data_preprocessor(data)['inputs']
    torch.testing.assert_close(seen[0], expected, rtol=1e-5, atol=1e-4)


# ---------------------------------------------------------------------- device, dtype
def test_teacher_follows_the_student_moved_before_init_weights(teacher_ckpt):
    """As the Runner does on a GPU: the student moves (here to float64, a stand-in for
    another device), then init_weights builds and loads the teacher, on the CPU in
    float32. A training step runs, teacher and conversion constants in the student's
    dtype; moved again, they follow again."""
    cfg = student_cfg(teacher_ckpt, teacher=renormalising_teacher())
    model = build(cfg, init=False).to(torch.float64)
    model.init_weights()
    for dtype in (torch.float64, torch.float32):
        model.to(dtype)
        seen = []
        handle = capture_input(model.teacher, seen)
        log_vars = model.train_step(batch(), build_optim_wrapper(model, cfg.optim_wrapper))
        handle.remove()
        assert all(torch.isfinite(v) for v in log_vars.values())
        assert seen[0].dtype == dtype
        assert {t.dtype for t in floating(model.teacher)} == {dtype}
        flip, scale, shift = model._renorm(seen[0])
        assert flip and scale.dtype == shift.dtype == dtype

    # Still the pixels as the teacher's own preprocessor normalises them.
    model.to(torch.float64)
    data, seen = batch(), []
    capture_input(model.teacher, seen)
    model.teacher_labels(model.data_preprocessor(data)['inputs'])
    assert seen[0].dtype == torch.float64
    torch.testing.assert_close(seen[0], model.teacher.data_preprocessor(data)['inputs'])


def test_teacher_follows_the_student_to_another_device(teacher_ckpt):
    """The meta device stands in for a GPU: loading the teacher (init_weights, whose
    mmengine half does not run on meta) after the student moved there builds and loads
    it on the CPU without mixing devices; inputs on another device take the teacher and
    the conversion constants along."""
    cfg = student_cfg(teacher_ckpt, teacher=renormalising_teacher())
    moved = build(cfg, init=False).to('meta')
    moved.load_teacher()
    assert moved._teacher.loaded
    assert {t.device.type for t in floating(moved.teacher)} == {'cpu'}

    model = build(cfg)
    inputs = model.data_preprocessor(batch())['inputs'].to('meta')
    assert model.teacher_labels(inputs).device.type == 'meta'
    assert {t.device.type for t in floating(model.teacher)} == {'meta'}
    flip, scale, shift = model._renorm(inputs)
    assert scale.device.type == shift.device.type == 'meta'


# ----------------------------------------------------------------------- frozen teacher
def test_teacher_is_frozen_outside_the_optimizer_and_unchanged_by_a_step(teacher_ckpt):
    cfg = student_cfg(teacher_ckpt)
    model = build(cfg)
    teacher = model.teacher
    model.train()
    assert not any(m.training for m in teacher.modules())
    assert not any(p.requires_grad for p in teacher.parameters())
    teacher_ids = {id(p) for p in teacher.parameters()}
    assert teacher_ids.isdisjoint(id(p) for p in model.parameters())
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    in_optimizer = {id(p) for g in optim_wrapper.optimizer.param_groups for p in g['params']}
    assert teacher_ids.isdisjoint(in_optimizer)
    assert in_optimizer == {id(p) for p in model.parameters()}

    teacher_before = copy.deepcopy(teacher.state_dict())  # BN running stats included
    student_before = copy.deepcopy(model.state_dict())
    log_vars = model.train_step(batch(), optim_wrapper)
    assert {'loss', 'loss_dist'} <= set(log_vars)
    for key, value in teacher.state_dict().items():
        assert torch.equal(value, teacher_before[key]), key
    assert not torch.equal(model.head.fc_dist.weight, student_before['head.fc_dist.weight'])
    assert not all(m.training for m in teacher.modules())

    # The EMA model (a deep copy) shares the teacher rather than copying it.
    assert copy.deepcopy(model).teacher is teacher


def test_checkpoint_of_a_runner_holds_the_student_only(teacher_ckpt, tmp_path,
                                                       on_toy_classification):
    """A real Runner run (toy data, two steps): the teacher is loaded, the saved state dict
    is the student's, and tools/test.py's path (load, predict) needs no teacher file."""
    cfg = on_toy_classification(student_cfg(teacher_ckpt))
    # Two epochs of one step: the warm-up epoch, then one of cosine decay.
    cfg.train_cfg.update(max_epochs=2, val_interval=2)
    cfg.work_dir = str(tmp_path / 'train')
    cfg.experiment_name = 'test_distill_train'
    runner = Runner.from_cfg(cfg)
    runner.train()
    assert runner.model._teacher.loaded

    checkpoint = torch.load(tmp_path / 'train' / 'epoch_2.pth', map_location='cpu')
    student_keys = set(build(cfg, init=False).state_dict())
    assert set(checkpoint['state_dict']) == student_keys
    assert not any(k.startswith('teacher') for k in checkpoint['state_dict'])

    cfg.model.teacher_ckpt = str(tmp_path / 'deleted.pth')  # testing never loads it
    cfg.load_from = str(tmp_path / 'train' / 'epoch_2.pth')
    cfg.work_dir = str(tmp_path / 'test')
    cfg.experiment_name = 'test_distill_test'
    metrics = Runner.from_cfg(cfg).test()
    assert 0 <= metrics['accuracy/top1'] <= 100


def test_save_teacher_puts_it_in_the_state_dict_and_loads_it_back(teacher_ckpt):
    model = build(student_cfg(teacher_ckpt, save_teacher=True))
    state = model.state_dict()
    teacher_keys = {k for k in state if k.startswith('teacher.')}
    assert teacher_keys == {f'teacher.{k}' for k in model.teacher.state_dict()}

    fresh = build(student_cfg(None), init=False)  # no teacher file at all
    fresh.load_state_dict(state, strict=True)
    assert fresh._teacher.loaded
    for key, value in model.teacher.state_dict().items():
        assert torch.equal(fresh.teacher.state_dict()[key], value)
    assert 'teacher.' not in ''.join(fresh.state_dict())  # save_teacher is off there


# ------------------------------------------------------------------------------ errors
def test_missing_teacher_checkpoint_names_the_key_to_set(tmp_path):
    with pytest.raises(FileNotFoundError, match=r'nowhere\.pth.*model\.teacher_ckpt'):
        build(student_cfg(tmp_path / 'nowhere.pth'))
    with pytest.raises(ValueError, match=r'set model\.teacher_ckpt'):
        build(student_cfg(None))
    model = build(student_cfg(None), init=False)
    data = model.data_preprocessor(batch(), training=True)
    with pytest.raises(RuntimeError, match=r'no weights.*model\.teacher_ckpt'):
        model(**data, mode='loss')


def test_teacher_checkpoint_of_another_model_is_refused(teacher_ckpt, tmp_path):
    other = tmp_path / 'other.pth'
    torch.save({'state_dict': {'backbone.conv1.weight': torch.zeros(1)}}, other)
    with pytest.raises(RuntimeError, match='Missing key'):
        build(student_cfg(other))


def test_a_teacher_needs_the_distillation_classifier(teacher_ckpt):
    with pytest.raises(ValueError, match='head.distillation=True'):
        build(student_cfg(teacher_ckpt, head=dict(distillation=False)), init=False)


# ----------------------------------------------------------------------------- testing
def test_prediction_averages_the_classifiers_and_never_runs_the_teacher(teacher_ckpt):
    model = build(student_cfg(teacher_ckpt), init=False).eval()
    data = model.data_preprocessor(batch())
    with torch.no_grad():
        preds = model(**data, mode='predict')
        hidden = model.head.pre_logits(model.extract_feat(data['inputs']))
        average = (model.head.fc(hidden) + model.head.fc_dist(hidden)) / 2
    torch.testing.assert_close(torch.stack([p.pred_score for p in preds]),
                               average.softmax(1))
    assert model._teacher.module is None  # never built


def test_without_a_teacher_both_classifiers_learn_the_labels(teacher_ckpt):
    model = build(student_cfg(None, teacher=None)).train()
    logits, logits_dist = [], []
    capture_output(model.head.fc, logits)
    capture_output(model.head.fc_dist, logits_dist)
    data = model.data_preprocessor(batch(), training=True)
    losses = model(**data, mode='loss')
    labels = torch.cat([s.gt_label for s in data['data_samples']])
    torch.testing.assert_close(losses['loss'], F.cross_entropy(logits[0], labels))
    torch.testing.assert_close(losses['loss_dist'], F.cross_entropy(logits_dist[0], labels))
