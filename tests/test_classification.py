"""Classification configs (configs/cvig-*_in1k*.py, configs/toy/), the toy dataset
generator and get_flops.py on a classifier.

The ImageNet configs are built as they are, except that the big archs are swapped for a
mini one of the same stem stride (the 28x28-token B-dagger keeps its stride 8) on 64x64
images, and their RegNetY-16GF teacher for timm's RegNetY-200MF (random weights, saved to
a checkpoint file); the real CViG-Ti is built once, at 224.
"""
import copy
import json
import re
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import load_toy_classification
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from mmengine.runner import Runner
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample
from PIL import Image

from mmcvig.analysis import count_params
from mmcvig.models import ClusterViG

ROOT = Path(__file__).resolve().parents[1]
IN1K_ARCHS = {
    'cvig-ti_8xb128_in1k.py': 'tiny',
    'cvig-s_8xb128_in1k.py': 'small',
    'cvig-b_8xb128_in1k.py': 'base',
    'cvig-b-hr_8xb128_in1k.py': 'base-hr',
}
NO_DISTILL = {name: name.replace('.py', '_no-distill.py') for name in IN1K_ARCHS}
TOY_CONFIG = ROOT / 'configs' / 'toy' / 'cvig-mini_toy-cls.py'
TOY_DISTILL = ROOT / 'configs' / 'toy' / 'cvig-mini_toy-cls_distill.py'
ALL_CONFIGS = ([ROOT / 'configs' / name for name in IN1K_ARCHS]
               + [ROOT / 'configs' / name for name in NO_DISTILL.values()]
               + [TOY_CONFIG, TOY_DISTILL])
SIZE = 64


toy = load_toy_classification()  # the generator, as a module


pytestmark = pytest.mark.usefixtures('one_thread')


def load_config(path):
    cfg = Config.fromfile(str(path))
    init_default_scope(cfg.default_scope)
    return cfg


def build_model(cfg):
    """The model as the Runner builds it: the top-level data_preprocessor (mean/std and
    the class count Mixup/CutMix need) goes into the model's."""
    model_cfg = copy.deepcopy(cfg.model)
    if cfg.get('data_preprocessor') is not None:
        model_cfg.setdefault('data_preprocessor', cfg.data_preprocessor)
    return MODELS.build(model_cfg)


def shrink(cfg):
    """The same model with a mini arch of the config's stem stride, at SIZE x SIZE."""
    arch = cfg.model.backbone.arch
    if isinstance(arch, str):
        stride = ClusterViG.arch_settings[arch]['stride']
        cfg.model.backbone.arch = dict(num_blocks=2, channels=32, num_clusters=3, groups=1,
                                       stride=stride)
        cfg.model.backbone.img_size = SIZE
        cfg.model.head.in_channels = 32
    return cfg


def tiny_teacher(cfg, directory):
    """Gives the config's teacher small settings and weights: timm's ``regnety_002``
    (RegNetY-200MF) for the ImageNet configs' ``regnety_160``, the toy teacher as it is;
    random weights, saved to a checkpoint file that ``model.teacher_ckpt`` then names."""
    teacher = cfg.model.get('teacher')
    if teacher is None:
        return cfg
    if isinstance(teacher, str):  # an mmpretrain config file
        teacher = Config.fromfile(teacher).model
    else:
        assert (teacher.type, teacher.model_name) == ('TimmClassifier', 'regnety_160')
        teacher.model_name = 'regnety_002'
    path = Path(directory) / 'teacher.pth'
    torch.save(MODELS.build(copy.deepcopy(teacher)).state_dict(), path)
    cfg.model.teacher_ckpt = str(path)
    return cfg


def batch(num_classes, size=SIZE, num=4):
    """What a dataloader gives the model: uint8 images and labelled data samples."""
    gen = torch.Generator().manual_seed(0)
    inputs = [torch.randint(0, 256, (3, size, size), dtype=torch.uint8, generator=gen)
              for _ in range(num)]
    samples = [DataSample().set_gt_label(i % num_classes) for i in range(num)]
    return dict(inputs=inputs, data_samples=samples)


def check_predictions(model, data, num_classes):
    model.eval()
    with torch.no_grad():
        preds = model.val_step(data)
    assert len(preds) == len(data['inputs'])
    for pred in preds:
        assert pred.pred_score.shape == (num_classes, )
        assert float(pred.pred_score.sum()) == pytest.approx(1., abs=1e-4)
        assert 0 <= int(pred.pred_label) < num_classes


# ----------------------------------------------------------------------------- configs
@pytest.mark.parametrize('name', sorted(IN1K_ARCHS))
def test_in1k_config_recipe(name):
    """The paper's recipe and the arch's width reach the built config."""
    cfg = Config.fromfile(str(ROOT / 'configs' / name))
    arch = IN1K_ARCHS[name]
    assert cfg.model.backbone.arch == arch
    assert cfg.model.head.in_channels == ClusterViG.arch_settings[arch]['channels']
    assert cfg.model.head.distillation and cfg.model.head.num_classes == 1000
    # DeiT's hard distillation from RegNetY-16GF, weights from a local file.
    assert cfg.model.type == 'HardDistillationClassifier'
    assert (cfg.model.teacher.type, cfg.model.teacher.model_name) == ('TimmClassifier',
                                                                      'regnety_160')
    assert cfg.model.teacher.num_classes == 1000 and not cfg.model.teacher.pretrained
    assert cfg.model.teacher_ckpt.endswith('.pth') and cfg.model.distill_weight == 0.5
    no_distill = Config.fromfile(str(ROOT / 'configs' / NO_DISTILL[name]))
    assert no_distill.model.teacher is None and no_distill.model.backbone.arch == arch
    assert cfg.model.head.loss.label_smooth_val == 0.1
    optimizer = cfg.optim_wrapper.optimizer
    assert (optimizer.type, optimizer.lr, optimizer.weight_decay) == ('AdamW', 2e-3, 0.05)
    assert cfg.auto_scale_lr.base_batch_size == 1024 == 8 * cfg.train_dataloader.batch_size
    assert cfg.train_cfg.max_epochs == 300
    assert [s.type for s in cfg.param_scheduler] == ['LinearLR', 'CosineAnnealingLR']
    assert {a.type: a.alpha for a in cfg.model.train_cfg.augments} == {'Mixup': 0.8,
                                                                       'CutMix': 1.0}
    steps = {t.type: t for t in cfg.train_dataloader.dataset.pipeline}
    assert 'RandAugment' in steps and steps['RandomErasing'].erase_prob == 0.25
    assert cfg.data_preprocessor.num_classes == 1000


@pytest.mark.parametrize('path', ALL_CONFIGS, ids=lambda p: p.name)
def test_train_and_predict_step(path, tmp_path):
    """Each config builds, loads its (tiny) teacher as the Runner would, takes an
    optimiser step with its own optim_wrapper (Mixup or CutMix included for ImageNet)
    and predicts, on a tiny CPU batch."""
    cfg = tiny_teacher(shrink(load_config(path)), tmp_path)
    model = build_model(cfg)
    model.init_weights()  # what the Runner does first; loads the teacher
    num_classes = cfg.model.head.num_classes
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    data = batch(num_classes)
    before = copy.deepcopy(model.state_dict())

    model.train()
    log_vars = model.train_step(data, optim_wrapper)
    expected = {'loss', 'loss_dist'} if cfg.model.head.distillation else {'loss'}
    assert expected <= set(log_vars) and all(torch.isfinite(v).all() for v in log_vars.values())
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert any(k.startswith('backbone.blocks') for k in changed)
    assert any(k.startswith('head.fc') for k in changed)

    check_predictions(model, data, num_classes)


def test_no_weight_decay_on_pos_embed_norms_and_biases():
    cfg = shrink(load_config(ROOT / 'configs' / 'cvig-ti_8xb128_in1k.py'))
    model = build_model(cfg)
    groups = build_optim_wrapper(model, cfg.optim_wrapper).optimizer.param_groups
    decay = {id(p): g['weight_decay'] for g in groups for p in g['params']}
    params = dict(model.named_parameters())
    assert decay[id(params['backbone.pos_embed'])] == 0
    assert decay[id(params['backbone.blocks.0.1.fc1.bn.weight'])] == 0
    assert decay[id(params['backbone.blocks.0.1.fc1.conv.bias'])] == 0
    assert decay[id(params['backbone.blocks.0.1.fc1.conv.weight'])] == 0.05
    assert decay[id(params['head.fc_dist.weight'])] == 0.05


def test_real_tiny_at_224():
    """CViG-Ti exactly as configured: the paper's 11.47 M parameters (distillation head
    included) and a prediction at 224x224."""
    cfg = load_config(ROOT / 'configs' / 'cvig-ti_8xb128_in1k.py')
    model = build_model(cfg)
    assert count_params(model) / 1e6 == pytest.approx(11.47, abs=0.005)
    check_predictions(model, batch(1000, size=224, num=1), 1000)


# -------------------------------------------------------------------------- toy dataset
def generate(out, *args):
    toy.main(['--out', str(out), '--size', '32', '--train', '2', '--val', '1', '--test', '1',
              *args])
    return json.loads((out / 'meta.json').read_text())['sha256']


def test_generator_is_deterministic_and_seeded(tmp_path):
    first = generate(tmp_path / 'a')
    assert generate(tmp_path / 'b') == first
    assert generate(tmp_path / 'c', '--seed', '1') != first
    assert sorted(p.name for p in (tmp_path / 'a' / 'train').iterdir()) == sorted(toy.CLASSES)


def test_generator_refuses_to_overwrite_a_different_dataset(tmp_path, capsys):
    out = tmp_path / 'toy'
    original = generate(out)
    assert generate(out) == original  # same settings, same images: nothing to do
    assert 'up to date' in capsys.readouterr().out

    with pytest.raises(SystemExit, match='other settings'):
        generate(out, '--seed', '1')
    image = next((out / 'val').rglob('*.png'))
    image.write_bytes(image.read_bytes() + b'edited')
    with pytest.raises(SystemExit, match='images changed'):
        generate(out)
    foreign = tmp_path / 'foreign'
    foreign.mkdir()
    (foreign / 'notes.txt').write_text('not a dataset')
    with pytest.raises(SystemExit, match='no meta.json'):
        generate(foreign)

    # --force rewrites what the tool writes, and only that.
    assert generate(out, '--force') == original
    assert generate(foreign, '--force') == original
    assert (foreign / 'notes.txt').read_text() == 'not a dataset'


def test_toy_classes_are_not_told_by_mean_colour(tmp_path):
    """Nearest class centroid of the mean RGB of an image stays near chance (1/6)."""
    out = tmp_path / 'toy'
    toy.main(['--out', str(out), '--size', '32', '--train', '30', '--val', '1', '--test',
              '20'])

    def mean_colours(split):
        files = sorted((out / split).rglob('*.png'))
        labels = np.array([toy.CLASSES.index(f.parent.name) for f in files])
        colours = np.stack([np.asarray(Image.open(f), float).mean((0, 1)) for f in files])
        return colours, labels

    train_x, train_y = mean_colours('train')
    test_x, test_y = mean_colours('test')
    centroids = np.stack([train_x[train_y == c].mean(0) for c in range(len(toy.CLASSES))])
    pred = ((test_x[:, None] - centroids[None])**2).sum(-1).argmin(1)
    assert (pred == test_y).mean() < 0.35


# ------------------------------------------------------------------------------ toy run
def test_toy_config_trains_and_evaluates_with_the_runner(tmp_path, on_toy_classification):
    cfg = on_toy_classification(load_config(TOY_CONFIG))
    # Two epochs of one step: the warm-up epoch, then one of cosine decay.
    cfg.train_cfg.max_epochs = 2
    cfg.work_dir = str(tmp_path / 'work_dir')
    # mmengine keys its global logger and message hub by experiment name.
    cfg.experiment_name = 'test_toy_cls'

    runner = Runner.from_cfg(cfg)
    runner.train()
    assert runner.iter == 2  # 12 training images in one batch, 2 epochs
    assert runner.message_hub.get_scalar('val/accuracy/top1') is not None
    metrics = runner.test()
    assert 0 <= metrics['accuracy/top1'] <= 100
    assert (tmp_path / 'work_dir' / 'epoch_2.pth').is_file()


def test_in1k_recipe_runs_through_the_runner_with_ema(tmp_path):
    """CViG-Ti's ImageNet recipe as it is (RepeatAugSampler, RandAugment, random erasing,
    Mixup/CutMix, EMA, a tiny timm teacher) on toy images in class folders, mini arch:
    it trains, saves the EMA weights without the teacher's and is tested from the
    checkpoint as tools/test.py does."""
    data_root = tmp_path / 'toy_cls'
    toy.main(['--out', str(data_root), '--size', '32', '--train', '2', '--val', '1',
              '--test', '1'])
    cfg = shrink(load_config(ROOT / 'configs' / 'cvig-ti_8xb128_in1k.py'))
    tiny_teacher(cfg, tmp_path)
    for loader, split in (('train_dataloader', 'train'), ('val_dataloader', 'val'),
                          ('test_dataloader', 'test')):
        # ImageNet's class list is fixed to the 1000 synsets; the toy folders are not.
        cfg[loader].dataset = dict(type='CustomDataset', data_root=str(data_root),
                                   data_prefix=split, pipeline=cfg[loader].dataset.pipeline)
        cfg[loader].batch_size = 6
        cfg[loader].num_workers = 0
        cfg[loader].persistent_workers = False
    # The 20 warm-up epochs and the cosine, squeezed into 2 epochs.
    cfg.param_scheduler[0].end = 1
    cfg.param_scheduler[1].begin = 1
    cfg.train_cfg.max_epochs = 2
    cfg.work_dir = str(tmp_path / 'train')
    cfg.experiment_name = 'test_in1k_recipe_train'
    Runner.from_cfg(cfg).train()

    checkpoint_file = tmp_path / 'train' / 'epoch_2.pth'
    checkpoint = torch.load(checkpoint_file, map_location='cpu')
    # The saved state_dict holds the averaged weights, which lag behind the trained ones.
    averaged, trained = checkpoint['state_dict'], checkpoint['ema_state_dict']
    assert not torch.equal(averaged['backbone.pos_embed'], trained['module.backbone.pos_embed'])
    assert not any('teacher' in key for key in [*averaged, *trained])

    cfg.load_from = str(checkpoint_file)
    cfg.work_dir = str(tmp_path / 'test')
    cfg.experiment_name = 'test_in1k_recipe_test'
    metrics = Runner.from_cfg(cfg).test()
    assert {'accuracy/top1', 'accuracy/top5'} <= set(metrics)


# ---------------------------------------------------------------------------- get_flops
def test_get_flops_on_a_classification_config(monkeypatch, capsys):
    """The tool's own main(), in this process: a fresh interpreter spends most of its
    time importing the stack on a busy machine."""
    config = ROOT / 'configs' / 'cvig-ti_8xb128_in1k.py'
    tool = ROOT / 'tools' / 'analysis_tools' / 'get_flops.py'
    monkeypatch.setattr(sys, 'argv', [str(tool), str(config), '--shape', str(SIZE),
                                      '--cfg-options', f'model.backbone.img_size={SIZE}'])
    runpy.run_path(str(tool), run_name='__main__')
    output = capsys.readouterr().out
    numbers = {key: float(value) for key, value in re.findall(
        r'^(params|GMACs, paper rule|GMACs, full)\D*?([\d.]+)', output, re.M)}
    assert set(numbers) == {'params', 'GMACs, paper rule', 'GMACs, full'}, output

    cfg = load_config(config)
    cfg.model.backbone.img_size = SIZE
    expected = count_params(build_model(cfg)) / 1e6
    assert numbers['params'] == pytest.approx(expected, abs=5e-4)
    # At 64x64 (4x4 tokens) the paper-rule count is the 224 one scaled by the pixels.
    assert numbers['GMACs, paper rule'] == pytest.approx(1.254 * (SIZE / 224)**2, rel=0.02)
    assert numbers['GMACs, paper rule'] < numbers['GMACs, full']
