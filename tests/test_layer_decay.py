"""Layer-wise lr decay for detectors (mmcvig.engine.LayerDecayOptimWrapperConstructor):
the lr of every parameter group on the toy Mask R-CNN, the no-decay rules kept, the
config fragment, and mmengine's Runner training the toy detector with it."""
import os
from pathlib import Path

import pytest
import torch
from mmdet.registry import MODELS
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from mmengine.runner import Runner

import mmcvig  # noqa: F401  (registers ClusterViG and the constructor)
from mmcvig.datasets import ToyCocoSpec, generate

ROOT = Path(__file__).resolve().parents[1]
TOY = ROOT / 'configs' / 'toy' / 'mask-rcnn_cvig-mini_fpn_toy.py'
FRAGMENT = ROOT / 'configs' / '_base_' / 'schedules' / 'adamw_cvig_1x_layer-decay.py'
TINY_RESNET = ROOT / 'tests' / 'data' / 'configs' / 'tiny_det.py'
RATE = 0.7
# What `--cfg-options` a user passes to any detector config.
LAYER_DECAY = {'optim_wrapper.constructor': 'LayerDecayOptimWrapperConstructor',
               'optim_wrapper.paramwise_cfg.layer_decay_rate': RATE}


pytestmark = pytest.mark.usefixtures('one_thread')


def toy_cfg():
    cfg = Config.fromfile(str(TOY))
    cfg.merge_from_dict(LAYER_DECAY)
    init_default_scope('mmdet')
    return cfg


def expected_scale(name, num_blocks):
    """ViTDet's rule, written out independently of get_layer_depth: stem and pos_embed
    at depth 0, block i at i + 1, the rest (pyramid adapter, neck, heads) at the top,
    num_blocks + 1, which trains at the base lr."""
    top = num_blocks + 1
    if name.startswith(('backbone.stem.', 'backbone.pos_embed')):
        depth = 0
    elif name.startswith('backbone.blocks.'):
        depth = int(name.split('.')[2]) + 1
    else:
        depth = top
    return RATE**(top - depth)


def test_lr_of_every_parameter_group_follows_the_decay_rule():
    cfg = toy_cfg()
    model = MODELS.build(cfg.model)
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    base_lr, base_wd = cfg.optim_wrapper.optimizer.lr, cfg.optim_wrapper.optimizer.weight_decay
    num_blocks = model.backbone.num_blocks
    params = dict(model.named_parameters())
    names = {id(p): n for n, p in params.items()}
    groups = wrapper.optimizer.param_groups
    seen = [names[id(p)] for g in groups for p in g['params']]
    assert sorted(seen) == sorted(params)  # every parameter, once

    lrs = {}
    for group in groups:
        [param] = group['params']
        name = names[id(param)]
        assert group['lr'] == pytest.approx(base_lr * expected_scale(name, num_blocks)), name
        lrs[name] = group['lr']
        # The fine-tuning's no-decay rules still hold.
        no_decay = (name.endswith('.bias') or 'pos_embed' in name or '.bn.' in name
                    or '.norm' in name or name.endswith(('gn.weight', 'ln.weight')))
        if no_decay:
            assert group['weight_decay'] == 0, name
    assert lrs['backbone.pos_embed'] == pytest.approx(base_lr * RATE**(num_blocks + 1))
    assert lrs['backbone.stem.0.conv.weight'] == lrs['backbone.pos_embed']
    last = f'backbone.blocks.{num_blocks - 1}.0.fc1.conv.weight'
    assert lrs[last] == pytest.approx(base_lr * RATE)
    assert lrs['neck.fpn_convs.0.conv.weight'] == pytest.approx(base_lr)
    assert lrs['roi_head.bbox_head.fc_cls.weight'] == pytest.approx(base_lr)
    decay = {names[id(g['params'][0])]: g['weight_decay'] for g in groups}
    assert decay['backbone.blocks.0.0.fc1.conv.weight'] == base_wd
    assert decay['backbone.blocks.0.0.fc1.bn.weight'] == 0


def test_config_fragment_is_the_paper_schedule_plus_layer_decay():
    fragment = Config.fromfile(str(FRAGMENT))
    paper = Config.fromfile(str(FRAGMENT.with_name('adamw_cvig_1x.py')))
    assert fragment.optim_wrapper.constructor == 'LayerDecayOptimWrapperConstructor'
    assert fragment.optim_wrapper.paramwise_cfg.layer_decay_rate == RATE
    assert fragment.optim_wrapper.optimizer == paper.optim_wrapper.optimizer
    for key, value in paper.optim_wrapper.paramwise_cfg.items():
        assert fragment.optim_wrapper.paramwise_cfg[key] == value
    assert fragment.param_scheduler == paper.param_scheduler


def test_clear_errors():
    cfg = toy_cfg()
    model = MODELS.build(cfg.model)
    del cfg.optim_wrapper.paramwise_cfg['layer_decay_rate']
    with pytest.raises(ValueError, match='layer_decay_rate'):
        build_optim_wrapper(model, cfg.optim_wrapper)
    cfg = Config.fromfile(str(TINY_RESNET))  # mmdet's ResNet: no get_layer_depth
    cfg.merge_from_dict(LAYER_DECAY)
    with pytest.raises(TypeError, match='get_layer_depth'):
        build_optim_wrapper(MODELS.build(cfg.model), cfg.optim_wrapper)


def test_toy_detector_trains_with_layer_decay(tmp_path):
    """mmengine's Runner trains the toy Mask R-CNN (2 iterations) with the constructor:
    the warm-up scales every group alike, so the ratios to the base lr stay the rule's,
    and the stem, at the smallest lr, is still trained."""
    generate(str(tmp_path / 'data' / 'toy_coco'),
             ToyCocoSpec(num_train=8, num_val=4, max_side=200, max_objects=3))
    cfg = toy_cfg()
    cfg.work_dir = str(tmp_path / 'work')
    cfg.train_cfg.update(max_epochs=1, val_interval=2)  # no validation
    cfg.train_dataloader.update(num_workers=0, persistent_workers=False)
    cfg.experiment_name = 'test_layer_decay_toy'
    old = os.getcwd()
    os.chdir(tmp_path)  # the config's data_root is relative
    try:
        runner = Runner.from_cfg(cfg)
        stem = runner.model.backbone.stem[0].conv.weight
        before = stem.detach().clone()
        runner.train()
    finally:
        os.chdir(old)
    assert runner.iter == 2
    assert not torch.equal(stem.detach(), before)
    num_blocks = runner.model.backbone.num_blocks
    names = {id(p): n for n, p in runner.model.named_parameters()}
    # (OptimWrapper.param_groups adds a group of its own that holds the base lr.)
    groups = runner.optim_wrapper.optimizer.param_groups
    top = [g['lr'] for g in groups if names[id(g['params'][0])].startswith('neck.')][0]
    for group in groups:
        name = names[id(group['params'][0])]
        assert group['lr'] == pytest.approx(top * expected_scale(name, num_blocks)), name
