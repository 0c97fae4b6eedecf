"""Detection with ClusterViG, on the CPU and real parts only.

* every detection config under configs/ builds with its real backbone (parameter counts
  of MODEL_SPEC, FPN in_channels, pretrained init, optimiser groups), and with a small
  (0.2 M-parameter) ClusterViG computes losses, backpropagates to the backbone and
  predicts on odd image sizes;
* the toy data set is deterministic, exact and protected from being overwritten;
* mmengine's Runner trains the toy config on a tiny generated data set, and
  tools/test.py evaluates its checkpoint with mmdet's CocoMetric;
* an ImageNet classifier checkpoint initialises the detector's backbone;
* tools/analysis_tools/get_flops.py counts a detector.
"""
import glob
import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from mmdet.registry import DATASETS
from mmdet.registry import MODELS as DET_MODELS
from mmdet.testing import demo_mm_inputs
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from mmengine.runner import Runner, save_checkpoint
from mmpretrain.registry import MODELS as CLS_MODELS
from pycocotools import mask as mask_utils

import mmcvig  # noqa: F401  (registers ClusterViG; checkpoints: mmcvig.compat)
from mmcvig.datasets import CLASSES, ToyCocoSpec, generate
from mmcvig.datasets.toy_coco import mask_to_polygons, render_image
from mmcvig.models import ClusterViG

ROOT = Path(__file__).resolve().parents[1]
TOY_CONFIG = ROOT / 'configs' / 'toy' / 'mask-rcnn_cvig-mini_fpn_toy.py'
MINI = dict(num_blocks=3, channels=32, num_clusters=3, groups=2, stride=16)
# Backbone alone (stem to last FFN, pos_embed included), MODEL_SPEC "Variants".
SPEC_BACKBONE_PARAMS = {'tiny': 9.223e6, 'small': 25.782e6, 'base': 102.095e6}
SHIPPED = {'mask-rcnn_cvig-ti_fpn_1x_coco.py', 'mask-rcnn_cvig-s_fpn_1x_coco.py',
           'mask-rcnn_cvig-b_fpn_1x_coco.py', 'retinanet_cvig-s_fpn_1x_coco.py',
           'cascade-mask-rcnn_cvig-s_fpn_1x_coco.py', 'mask-rcnn_cvig-mini_fpn_toy.py'}
IMAGE_SHAPES = [(3, 125, 130), (3, 97, 211)]


def detection_configs():
    """Every config under configs/ (bases aside) whose default scope is mmdet."""
    paths = sorted(p for p in (ROOT / 'configs').rglob('*.py') if '_base_' not in p.parts)
    return [p for p in paths if Config.fromfile(p).get('default_scope') == 'mmdet']


DET_CONFIGS = detection_configs()
CONFIG_IDS = [p.stem for p in DET_CONFIGS]


@pytest.fixture(autouse=True, scope='module')
def one_torch_thread():
    """Two OpenMP threads on a 2-core machine that other jobs share spin-wait for each
    other: a toy training step took 10.8 s with them and 1.4 s with one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_every_shipped_detection_config_is_found():
    assert SHIPPED <= {p.name for p in DET_CONFIGS}


def _walk(node, fn):
    """Calls ``fn`` on every dict inside a config (lists of stages included)."""
    if isinstance(node, dict):
        fn(node)
        for value in node.values():
            _walk(value, fn)
    elif isinstance(node, (list, tuple)):
        for value in node:
            _walk(value, fn)


def _fewer_samples(node):
    """Fewer sampled RoIs and proposals: the real heads, at a CPU test's cost."""
    if 'sampler' in node and 'num' in node['sampler']:
        node['sampler']['num'] = 32
    if 'max_per_img' in node and 'nms' in node and 'score_thr' not in node:
        node.update(nms_pre=200, max_per_img=100)  # RPN proposals
    if 'score_thr' in node:
        # An untrained model still predicts something; few detections, as the mask
        # head runs on each.
        node.update(score_thr=0., max_per_img=10)


def mini_model_cfg(path, pretrained=None):
    """The config's model with the small ClusterViG :data:`MINI`, initialised from
    ``pretrained`` by the config's own init_cfg, or from scratch."""
    cfg = Config.fromfile(path)
    backbone = cfg.model.backbone
    backbone.arch = MINI
    if pretrained is None:
        backbone.init_cfg = None
    else:
        backbone.init_cfg.checkpoint = pretrained
    cfg.model.neck.in_channels = ClusterViG(MINI, pyramid=backbone.pyramid).out_channels
    _walk(cfg.model.get('train_cfg'), _fewer_samples)
    _walk(cfg.model.get('test_cfg'), _fewer_samples)
    return cfg


def build_detector(model_cfg):
    init_default_scope('mmdet')
    return DET_MODELS.build(model_cfg)


def count(module):
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize('path', DET_CONFIGS, ids=CONFIG_IDS)
def test_config_builds_with_its_real_backbone(path):
    cfg = Config.fromfile(path)
    model = build_detector(cfg.model)
    backbone = model.backbone
    assert isinstance(backbone, ClusterViG)
    # FPN in_channels are what the pyramid gives.
    assert list(cfg.model.neck.in_channels) == backbone.out_channels
    if isinstance(cfg.model.backbone.arch, str):  # a paper variant
        isotropic = count(backbone) - count(backbone.pyramid)
        assert abs(isotropic - SPEC_BACKBONE_PARAMS[cfg.model.backbone.arch]) < 1e3
        init = cfg.model.backbone.init_cfg
        assert (init.type, init.prefix) == ('Pretrained', 'backbone.')
        assert init.checkpoint.startswith('work_dirs/cvig-')
    assert cfg.model.data_preprocessor.mean == [127.5] * 3  # as the ImageNet training
    # Results must not depend on batch mates (mmdet pads every batch).
    assert cfg.model.backbone.pad_aware is True


FRAGMENT = ROOT / 'configs' / '_base_' / 'models' / 'cvig-s_pyramid.py'


@pytest.mark.parametrize('path', DET_CONFIGS, ids=CONFIG_IDS)
def test_backbone_and_normalisation_are_spelled_once(path):
    # Only the fragment spells out the backbone, its normalisation and its channels;
    # every detection config inherits them (directly or through another config).
    text = path.read_text()
    assert "type='ClusterViG'" not in text and '127.5' not in text
    assert not re.search(r'in_channels=\[\d', text), 'FPN in_channels typed by hand'
    assert "type='ClusterViG'" in FRAGMENT.read_text()


def test_no_weight_decay_on_norms_biases_and_pos_embed():
    cfg = mini_model_cfg(ROOT / 'configs' / 'mask-rcnn_cvig-s_fpn_1x_coco.py')
    model = build_detector(cfg.model)
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    decay = {id(p): g['weight_decay'] for g in wrapper.optimizer.param_groups
             for p in g['params']}
    assert wrapper.optimizer.defaults['lr'] == 2e-4
    backbone = model.backbone
    assert decay[id(backbone.pos_embed)] == 0
    assert decay[id(backbone.blocks[0][0].fc1.bn.weight)] == 0
    assert decay[id(backbone.blocks[0][0].fc1.conv.bias)] == 0
    assert decay[id(backbone.blocks[0][0].fc1.conv.weight)] == 0.05
    assert decay[id(model.neck.fpn_convs[0].conv.weight)] == 0.05


@pytest.mark.parametrize('path', DET_CONFIGS, ids=CONFIG_IDS)
def test_loss_backward_and_predict_on_odd_sizes(path):
    cfg = mini_model_cfg(path)
    model = build_detector(cfg.model)
    with_mask = 'mask_head' in cfg.model.get('roi_head', {})
    packed = demo_mm_inputs(len(IMAGE_SHAPES), IMAGE_SHAPES, num_items=[3, 2],
                            num_classes=len(CLASSES), with_mask=with_mask)

    model.train()
    losses = model(**model.data_preprocessor(packed, True), mode='loss')
    loss, _ = model.parse_losses(losses)
    assert torch.isfinite(loss)
    assert with_mask == any('mask' in k for k in losses)
    loss.backward()
    # Gradients reach the stem through the blocks and every pyramid level.
    assert model.backbone.stem[0].conv.weight.grad.abs().sum() > 0
    for level in model.backbone.pyramid.levels:
        for p in level.parameters():
            assert p.grad.abs().sum() > 0

    model.eval()
    with torch.no_grad():
        results = model(**model.data_preprocessor(packed, False), mode='predict')
    for result, (_, height, width) in zip(results, IMAGE_SHAPES):
        pred = result.pred_instances
        assert len(pred) > 0 and pred.bboxes.shape == (len(pred), 4)
        assert torch.isfinite(pred.bboxes).all()
        if with_mask:  # pasted at the original image size
            assert pred.masks.shape == (len(pred), height, width)


# ----------------------------------------------------------------------- toy data set
TINY = ToyCocoSpec(num_train=8, num_val=4, max_side=200, max_objects=3)


def read(path):
    with open(path, 'rb') as f:
        return f.read()


def test_toy_data_is_deterministic_and_guarded(tmp_path):
    first, second = tmp_path / 'a', tmp_path / 'b'
    small = ToyCocoSpec(num_train=3, num_val=2, max_side=160)
    assert generate(str(first), small) and generate(str(second), small)
    files = sorted(p.relative_to(first) for p in first.rglob('*') if p.is_file())
    assert len(files) == 3 + 2 + 2 + 1  # images, annotation files, manifest
    assert all(read(first / f) == read(second / f) for f in files)

    assert not generate(str(first), small)  # up to date: nothing written
    (second / 'val' / '000001.jpg').unlink()
    with pytest.raises(FileExistsError, match='files missing'):
        generate(str(second), small)
    other = ToyCocoSpec(num_train=4, num_val=2, max_side=160)
    with pytest.raises(FileExistsError, match=r"num_train.*--force"):
        generate(str(first), other)
    (tmp_path / 'foreign').mkdir()
    (tmp_path / 'foreign' / 'notes.txt').write_text('not a toy data set')
    with pytest.raises(FileExistsError, match='no manifest.json'):
        generate(str(tmp_path / 'foreign'), small)
    assert generate(str(first), other, force=True)
    with open(first / 'annotations' / 'instances_train.json') as f:
        coco = json.load(f)
    assert len(coco['images']) == 4
    assert [c['name'] for c in coco['categories']] == list(CLASSES)


def test_toy_polygons_are_exactly_the_painted_pixels():
    for index in range(4):
        rng = np.random.default_rng([1, 0, index])
        image, labels, masks = render_image(rng, 180, 240, max_objects=6)
        assert image.shape == (180, 240, 3) and len(labels) == len(masks) >= 1
        for mask in masks:
            rle = mask_utils.merge(mask_utils.frPyObjects(mask_to_polygons(mask), 180, 240))
            np.testing.assert_array_equal(mask_utils.decode(rle), mask)


def test_missing_toy_data_says_how_to_make_it(tmp_path):
    cfg = Config.fromfile(TOY_CONFIG)
    dataset = cfg.train_dataloader.dataset
    dataset.data_root = str(tmp_path / 'nowhere')
    init_default_scope('mmdet')
    with pytest.raises(FileNotFoundError, match=r'nowhere.*make_toy_coco\.py --out'):
        DATASETS.build(dataset)


# --------------------------------------------------------------- toy training, testing
def run_tool(*args, cwd):
    """Runs a tool of tools/ from ``cwd`` on one torch thread (the CPU is shared)."""
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    env['OMP_NUM_THREADS'] = '1'
    result = subprocess.run([sys.executable, *map(str, args)], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=300)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-5000:]
    return log


NO_WORKERS = ['num_workers=0', 'persistent_workers=False']


@pytest.fixture(scope='module')
def toy_run(tmp_path_factory):
    """(cwd, runner) after one epoch (2 iterations) of the toy config with mmengine's
    Runner, from a directory holding a tiny toy data set at the configured path."""
    cwd = tmp_path_factory.mktemp('toy')
    generate(str(cwd / 'data' / 'toy_coco'), TINY)
    cfg = Config.fromfile(TOY_CONFIG)
    cfg.work_dir = str(cwd / 'work')
    cfg.train_cfg.update(max_epochs=1, val_interval=1)
    for loader in (cfg.train_dataloader, cfg.val_dataloader):
        loader.update(num_workers=0, persistent_workers=False)
    old = os.getcwd()
    os.chdir(cwd)  # the config's data_root is relative
    try:
        runner = Runner.from_cfg(cfg)
        runner.train()
    finally:
        os.chdir(old)
    return cwd, runner


def test_runner_trains_and_tools_test_evaluates(toy_run):
    cwd, runner = toy_run
    assert runner.iter == TINY.num_train // 4
    val_map = runner.message_hub.get_scalar('val/coco/bbox_mAP').current()

    ckpt = cwd / 'work' / 'epoch_1.pth'
    run_tool(ROOT / 'tools' / 'test.py', TOY_CONFIG, ckpt, '--work-dir', 'test',
             '--cfg-options', *(f'test_dataloader.{o}' for o in NO_WORKERS), cwd=cwd)

    [metrics_file] = glob.glob(str(cwd / 'test' / '*' / '*.json'))
    with open(metrics_file) as f:
        metrics = json.load(f)
    # The checkpoint holds the whole model: tools/test.py scores what training validated,
    # every metric (COCO's -1 where the set has no object of a size).
    assert metrics['coco/bbox_mAP'] == pytest.approx(val_map, abs=1e-3)
    for task in ('bbox', 'segm'):
        for suffix in ('', '_50', '_75', '_s', '_m', '_l'):
            key = f'coco/{task}_mAP{suffix}'
            validated = runner.message_hub.get_scalar(f'val/{key}').current()
            assert metrics[key] == pytest.approx(validated, abs=1e-3), key


# ------------------------------------------------------------------ pretrained backbone
def test_classifier_checkpoint_initialises_the_backbone(tmp_path):
    init_default_scope('mmpretrain')
    classifier = CLS_MODELS.build(dict(
        type='ImageClassifier', backbone=dict(type='ClusterViG', arch=MINI),
        head=dict(type='ClusterViGClsHead', num_classes=3, in_channels=MINI['channels'],
                  hidden_channels=16)))
    # The layout mmengine's Runner saves: `state_dict` with `backbone.` / `head.` keys.
    ckpt = str(tmp_path / 'cls.pth')
    save_checkpoint(dict(meta=dict(epoch=300), state_dict=classifier.state_dict()), ckpt)

    cfg = mini_model_cfg(ROOT / 'configs' / 'mask-rcnn_cvig-s_fpn_1x_coco.py', ckpt)
    detector = build_detector(cfg.model)
    # The newest MMLogger is the `current` one mmengine's initialisers report to.
    log_file = tmp_path / 'init.log'
    MMLogger.get_instance(f'test_pretrained_{tmp_path.name}', log_file=str(log_file),
                          log_level=logging.INFO)
    detector.init_weights()

    loaded = detector.backbone.state_dict()
    for key, value in classifier.backbone.state_dict().items():
        torch.testing.assert_close(loaded[key], value, msg=key)
    log = log_file.read_text()
    assert 'load backbone. in model from' in log
    missing = re.search(r'missing keys in source state_dict: (.*)', log).group(1).split(', ')
    assert missing and all(k.startswith('pyramid.') for k in missing)
    assert 'unexpected key' not in log  # the classifier's head is not offered


# ------------------------------------------------------------------------- get_flops
def test_get_flops_on_a_detector(tmp_path):
    log = run_tool(ROOT / 'tools' / 'analysis_tools' / 'get_flops.py',
                   ROOT / 'configs' / 'mask-rcnn_cvig-s_fpn_1x_coco.py', '--shape', '96', '128',
                   '--cfg-options', 'model.backbone.arch=tiny',
                   'model.neck.in_channels=[48,96,192,192]', cwd=tmp_path)
    backbone = count(ClusterViG('tiny', pyramid=dict())) / 1e6
    assert re.search(rf'params: [\d.]+ M \(backbone {backbone:.3f} M\)', log), log
    conv, full = (float(x) for x in re.findall(r'GMACs, .*: ([\d.]+)', log))
    assert 0 < conv <= full
