"""Mixed-precision training (``tools/train.py --amp [--amp-dtype]``): CPUAmpOptimWrapper
in float16 with its loss scaler and in bfloat16, its ``autocast_modules`` (only some
submodules autocast), what the tool builds on the CPU and on CUDA, and the toy Mask R-CNN
trained a few iterations by mmengine's Runner in both dtypes on this CPU, with the config
``tools/train.py --amp --amp-dtype`` builds.

Two mmcv 2.1 CPU kernels refuse what CPU autocast of a whole detector hands them (the
guard test below fails once they no longer do): NMS reads float32 boxes only, and on the
CPU mmdet's RPN decodes its proposals in the autocast dtype (CUDA's autocast runs ``exp``
in float32, so there they come out float32); RoIAlign has no bfloat16 kernel. So on the
CPU ``--amp`` autocasts a detector's backbone and neck only, and its heads run in float32.
"""
import importlib
import importlib.util
import io
import math
import warnings
from collections import namedtuple
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from mmcv.ops import RoIAlign, batched_nms
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.logging import MessageHub
from mmengine.model import BaseModel
from mmengine.optim import AmpOptimWrapper, OptimWrapper, build_optim_wrapper
from mmengine.runner import Runner
from mmengine.runner.checkpoint import _load_checkpoint

from mmcvig.datasets import ToyCocoSpec, generate
from mmcvig.engine import CPUAmpOptimWrapper
from mmcvig.engine.optim_wrapper import half_to_float32
from mmcvig.engine.scope import register_modules, scope_of

ROOT = Path(__file__).resolve().parents[1]
TOY_CONFIG = ROOT / 'configs' / 'toy' / 'mask-rcnn_cvig-mini_fpn_toy.py'
# float16 convolutions run ~100x slower than float32 on this CPU (no native half
# arithmetic; here the backbone's and the neck's): 64-px images (tests/test_tools.py's),
# 2 a batch, 5 iterations.
TOY_AMP = ToyCocoSpec(num_train=10, num_val=1, min_side=64, max_side=64, max_objects=2)
IMAGE_SCALE = (64, 64)
BATCH_SIZE = 2
ITERS = TOY_AMP.num_train // BATCH_SIZE

pytestmark = pytest.mark.usefixtures('one_thread')


def load_train_tool():
    """tools/train.py as a module (tools/ is not a package)."""
    spec = importlib.util.spec_from_file_location('mmcvig_train_tool',
                                                  ROOT / 'tools' / 'train.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def train_tool():
    return load_train_tool()


def linear_wrapper(**kwargs):
    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    return model, CPUAmpOptimWrapper(optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                                     **kwargs)


def train_step(model, wrapper, scale=1.0, seed=1):
    gen = torch.Generator().manual_seed(seed)
    with wrapper.optim_context(model):
        outputs = model(torch.randn(3, 4, generator=gen))
    wrapper.update_params(scale * outputs.float().pow(2).mean())
    return outputs


def through_a_checkpoint(state_dict):
    """``state_dict`` saved and loaded back as ``--resume`` loads it (weights_only)."""
    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


# ---------------------------------------------------------------- CPUAmpOptimWrapper
def test_float16_forward_with_a_loss_scaler():
    model, wrapper = linear_wrapper(dtype='float16')
    before = model.weight.detach().clone()

    outputs = train_step(model, wrapper)

    assert outputs.dtype == torch.float16
    assert isinstance(wrapper.loss_scaler, torch.amp.GradScaler)
    assert wrapper.loss_scaler.get_scale() == 2.**16  # no overflow: the scale stays
    assert model.weight.dtype == torch.float32
    assert not torch.equal(model.weight, before)


def test_float16_overflow_skips_the_step_and_backs_off():
    model, wrapper = linear_wrapper(dtype='float16')
    before = model.weight.detach().clone()

    # x 65536 (the initial scale) overflows the float16 gradient of the output.
    train_step(model, wrapper, scale=1e4)

    assert torch.equal(model.weight, before)
    assert wrapper.loss_scaler.get_scale() == 2.**15


def test_float16_clips_unscaled_gradients():
    """The scaler unscales before clipping: the logged norm is the true one."""
    model, wrapper = linear_wrapper(dtype='float16', clip_grad=dict(max_norm=1e3))
    reference_model = nn.Linear(4, 2)  # the same model and batch in float32
    reference_model.load_state_dict(model.state_dict())
    train_step(reference_model, OptimWrapper(
        optimizer=torch.optim.SGD(reference_model.parameters(), lr=0.1),
        clip_grad=dict(max_norm=1e3)))
    true_norm = MessageHub.get_current_instance().get_scalar('train/grad_norm').current()

    train_step(model, wrapper)

    norm = MessageHub.get_current_instance().get_scalar('train/grad_norm').current()
    assert norm == pytest.approx(true_norm, rel=1e-2)


def test_bfloat16_forward_without_scaling():
    model, wrapper = linear_wrapper()  # bfloat16 is the default
    outputs = train_step(model, wrapper)

    assert outputs.dtype == torch.bfloat16
    assert wrapper.loss_scaler is None
    assert 'loss_scaler' not in wrapper.state_dict()


def test_state_dict_round_trip_holds_the_scaler():
    """A float16 wrapper resumed from its state dict scales and steps as the original."""
    model, wrapper = linear_wrapper(dtype='float16', loss_scale=dict(growth_interval=2))
    train_step(model, wrapper, scale=1e4, seed=1)  # overflow: scale 2**15
    train_step(model, wrapper, seed=2)  # growth tracker 1
    state = through_a_checkpoint(wrapper.state_dict())
    assert state['loss_scaler'] == wrapper.loss_scaler.state_dict()
    assert (state['loss_scaler']['scale'], state['loss_scaler']['_growth_tracker']) == \
        (2.**15, 1)

    resumed_model, resumed = linear_wrapper(dtype='float16')
    resumed_model.load_state_dict(model.state_dict())
    resumed.load_state_dict(state)
    assert 'loss_scaler' in state  # the caller's dict is left whole
    for m, w in ((model, wrapper), (resumed_model, resumed)):
        train_step(m, w, seed=3)  # the second good step in a row: the scale grows
    assert resumed.loss_scaler.state_dict() == wrapper.loss_scaler.state_dict()
    assert resumed.loss_scaler.get_scale() == 2.**16
    assert torch.equal(resumed_model.weight, model.weight)

    # Resuming that checkpoint in bfloat16 drops the scaler state.
    _, bf16 = linear_wrapper()
    bf16.load_state_dict(state)
    assert bf16.loss_scaler is None


@pytest.mark.parametrize('dtype', ['float32', torch.float32, 'half', 'fp16'])
def test_other_dtypes_are_refused(dtype):
    with pytest.raises(ValueError, match=r"dtype must be one of \('bfloat16', 'float16'\)"):
        linear_wrapper(dtype=dtype)


def test_dtype_may_be_a_torch_dtype():
    assert linear_wrapper(dtype=torch.float16)[1].cast_dtype == torch.float16


# ------------------------------------------------ CPUAmpOptimWrapper(autocast_modules)
class Neck(nn.Module):
    """Returns its features in a tuple, a list, a dict and a named tuple, with an integer
    tensor beside them."""
    Pair = namedtuple('Pair', 'features count')

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 4)

    def forward(self, x):
        y = self.linear(x)
        return (y, [y, dict(y=y, n=torch.ones(1, dtype=torch.long))], self.Pair(y, 3))


class TwoStage(nn.Module):
    """backbone -> neck -> head, recording the dtype each one's layer computes in."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.backbone = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
        self.neck = Neck()
        self.head = nn.Linear(4, 2)
        self.dtypes = {}
        for name in ('backbone.0', 'neck.linear', 'head'):
            self.get_submodule(name).register_forward_hook(
                lambda module, inputs, output, name=name: self.dtypes.update({name: output.dtype}))

    def forward(self, x):
        features, _, _ = self.neck(self.backbone(x))
        return self.head(features)


def trunk_wrapper(model, names=('backbone', 'neck'), **kwargs):
    return CPUAmpOptimWrapper(optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                              autocast_modules=names, **kwargs)


def patched(model):
    """The names of the modules whose ``forward`` is an instance attribute."""
    return [name for name, module in model.named_modules() if 'forward' in module.__dict__]


@pytest.mark.parametrize('dtype', ['bfloat16', 'float16'])
def test_autocast_modules_cast_their_outputs_back_to_float32(dtype):
    model = TwoStage()
    wrapper = trunk_wrapper(model, dtype=dtype)
    x = torch.randn(3, 4)

    with wrapper.optim_context(model):
        outputs = model(x)
        neck_outputs = model.neck(model.backbone(x))
    wrapper.update_params(outputs.pow(2).mean())

    low = getattr(torch, dtype)
    assert model.dtypes == {'backbone.0': low, 'neck.linear': low, 'head': torch.float32}
    assert outputs.dtype == torch.float32
    features, [same, nested], pair = neck_outputs
    assert {t.dtype for t in (features, same, nested['y'], pair.features)} == {torch.float32}
    assert nested['n'].dtype == torch.long and type(pair) is Neck.Pair and pair.count == 3
    assert patched(model) == []  # the forwards are the classes' again
    assert model(x).dtype == torch.float32 and model.dtypes['backbone.0'] == torch.float32


def test_half_to_float32_leaves_other_dtypes():
    tensors = [torch.ones(1, dtype=dtype) for dtype in
               (torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.int32)]
    assert [t.dtype for t in half_to_float32(tensors)] == \
        [torch.float32, torch.float32, torch.float32, torch.float64, torch.int32]
    assert half_to_float32('text') == 'text'


def test_autocast_modules_forwards_restored_when_the_body_raises():
    model = TwoStage()
    wrapper = trunk_wrapper(model)
    own_forward = model.neck.forward  # a forward patched before: it comes back as it was
    model.neck.forward = own_forward

    with pytest.raises(RuntimeError, match='in the body'):
        with wrapper.optim_context(model):
            assert patched(model) == ['backbone', 'neck']
            assert model.neck.forward is not own_forward
            raise RuntimeError('in the body')

    assert patched(model) == ['neck'] and model.neck.forward is own_forward
    model(torch.randn(3, 4))
    assert set(model.dtypes.values()) == {torch.float32}


def test_autocast_modules_refuses_an_unknown_name():
    model = TwoStage()
    wrapper = trunk_wrapper(model, names=('backbone', 'nekc', 'head.weight'))

    with pytest.raises(ValueError, match=r"names \['nekc', 'head.weight'\], which TwoStage "
                       r'has no submodule of \(its children: backbone, neck, head\)'):
        with wrapper.optim_context(model):
            pass
    assert patched(model) == []  # none wrapped, the valid one neither


@pytest.mark.parametrize('names,error', [('backbone', TypeError), ([], ValueError),
                                         (['backbone', 1], TypeError)])
def test_autocast_modules_must_be_names(names, error):
    with pytest.raises(error, match='autocast_modules'):
        trunk_wrapper(TwoStage(), names=names)


def test_autocast_modules_of_a_wrapped_model():
    """Names are those of the module inside a model wrapper (DDP, here DataParallel,
    which runs on the CPU without a process group)."""
    model = TwoStage()
    wrapped = nn.DataParallel(model)
    wrapper = trunk_wrapper(wrapped, names=['backbone', 'backbone'])  # repeats: once

    with wrapper.optim_context(wrapped):
        outputs = wrapped(torch.randn(3, 4))

    assert model.dtypes == {'backbone.0': torch.bfloat16, 'neck.linear': torch.float32,
                            'head': torch.float32}
    assert outputs.dtype == torch.float32 and patched(model) == []


class TrunkModel(BaseModel):
    """An mmengine model: its train_step enters optim_context, val_step and test_step
    do not (mmengine's AmpOptimWrapper autocasts training only, as this does)."""

    def __init__(self):
        super().__init__()
        self.net = TwoStage()

    def forward(self, inputs, data_samples=None, mode='tensor'):
        outputs = self.net(inputs)
        return dict(loss=outputs.float().pow(2).mean()) if mode == 'loss' else [outputs]


def test_autocast_modules_in_train_step_only():
    model = TrunkModel()
    wrapper = trunk_wrapper(model, names=['net.backbone'])
    data = dict(inputs=torch.randn(3, 4))

    model.train_step(data, wrapper)
    assert model.net.dtypes['backbone.0'] == torch.bfloat16
    assert model.net.dtypes['head'] == torch.float32
    for step in (model.val_step, model.test_step):
        model.net.dtypes.clear()
        assert step(data)[0].dtype == torch.float32
        assert set(model.net.dtypes.values()) == {torch.float32}


# ---------------------------------------------------------------- tools/train.py --amp
def sgd_config(**optim_wrapper):
    return Config(dict(optim_wrapper=dict(
        type='OptimWrapper', optimizer=dict(type='SGD', lr=0.1), **optim_wrapper)))


@pytest.mark.parametrize('dtype,expected', [(None, 'bfloat16'), ('bfloat16', 'bfloat16'),
                                            ('float16', 'float16')])
def test_train_tool_amp_on_the_cpu(train_tool, monkeypatch, dtype, expected):
    monkeypatch.setattr(train_tool, 'get_device', lambda: 'cpu')
    cfg = sgd_config()
    train_tool.enable_amp(cfg, dtype)

    assert cfg.optim_wrapper.type == 'CPUAmpOptimWrapper'
    assert cfg.optim_wrapper.dtype == expected
    assert cfg.optim_wrapper.get('loss_scale') == ('dynamic' if expected == 'float16' else None)
    wrapper = build_optim_wrapper(nn.Linear(2, 1), cfg.optim_wrapper)
    assert wrapper.cast_dtype == getattr(torch, expected)
    assert (wrapper.loss_scaler is not None) == (expected == 'float16')


@pytest.mark.parametrize('dtype', [None, 'float16', 'bfloat16'])
def test_train_tool_amp_on_cuda(train_tool, monkeypatch, dtype):
    """mmengine's own AmpOptimWrapper, in ``dtype`` or mmengine's default (float16)."""
    monkeypatch.setattr(train_tool, 'get_device', lambda: 'cuda')
    cfg = sgd_config()
    train_tool.enable_amp(cfg, dtype)

    assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
    assert cfg.optim_wrapper.loss_scale == 'dynamic'
    assert cfg.optim_wrapper.get('dtype') == dtype
    # Built as on a GPU: mmengine asks whether there is one (without, its GradScaler
    # warns and disables itself).
    amp_module = importlib.import_module(AmpOptimWrapper.__module__)
    monkeypatch.setattr(amp_module, 'is_cuda_available', lambda: True)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        wrapper = build_optim_wrapper(nn.Linear(2, 1), cfg.optim_wrapper)
    assert type(wrapper) is AmpOptimWrapper
    assert wrapper.cast_dtype == (None if dtype is None else getattr(torch, dtype))


def test_train_tool_amp_dtype_overrides_an_amp_config(train_tool):
    cfg = sgd_config()
    cfg.optim_wrapper.update(type='AmpOptimWrapper', dtype='float16')
    train_tool.enable_amp(cfg, 'bfloat16')
    assert (cfg.optim_wrapper.type, cfg.optim_wrapper.dtype) == ('AmpOptimWrapper', 'bfloat16')


def classifier_config():
    cfg = sgd_config()
    cfg.update(default_scope='mmpretrain',
               model=dict(type='ImageClassifier', backbone=dict(), neck=dict(), head=dict()))
    return cfg


def detector_config():
    cfg = Config.fromfile(TOY_CONFIG)  # default_scope='mmdet', a Mask R-CNN
    cfg.optim_wrapper = sgd_config().optim_wrapper
    return cfg


@pytest.mark.parametrize('dtype', ['float16', 'bfloat16'])
def test_train_tool_cpu_amp_autocasts_a_detectors_trunk(train_tool, monkeypatch, dtype):
    monkeypatch.setattr(train_tool, 'get_device', lambda: 'cpu')
    detector = detector_config()
    train_tool.enable_amp(detector, dtype)
    classifier = classifier_config()
    train_tool.enable_amp(classifier, dtype)

    assert detector.optim_wrapper.type == 'CPUAmpOptimWrapper'
    assert detector.optim_wrapper.autocast_modules == ('backbone', 'neck')
    assert 'autocast_modules' not in classifier.optim_wrapper  # the whole model


def test_train_tool_detector_without_a_default_scope(train_tool, monkeypatch):
    """The heads tell a detector too."""
    monkeypatch.setattr(train_tool, 'get_device', lambda: 'cpu')
    cfg = sgd_config()
    cfg.model = dict(backbone=dict(), bbox_head=dict())  # a single-stage detector
    train_tool.enable_amp(cfg)
    assert cfg.optim_wrapper.autocast_modules == ('backbone', )


def test_train_tool_keeps_a_configs_autocast_modules(train_tool, monkeypatch):
    monkeypatch.setattr(train_tool, 'get_device', lambda: 'cpu')
    cfg = detector_config()
    cfg.optim_wrapper.update(type='CPUAmpOptimWrapper', autocast_modules=['backbone'])
    train_tool.enable_amp(cfg)
    assert cfg.optim_wrapper.autocast_modules == ['backbone']

    cfg.optim_wrapper.pop('autocast_modules')  # an AMP config without: the trunk's
    train_tool.enable_amp(cfg, 'float16')
    assert cfg.optim_wrapper.autocast_modules == ('backbone', 'neck')


def test_train_tool_amp_on_cuda_autocasts_the_whole_detector(train_tool, monkeypatch):
    monkeypatch.setattr(train_tool, 'get_device', lambda: 'cuda')
    cfg = detector_config()
    train_tool.enable_amp(cfg)
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
    assert 'autocast_modules' not in cfg.optim_wrapper


def test_train_tool_amp_dtype_command_line(train_tool, monkeypatch):
    monkeypatch.setenv('LOCAL_RANK', '0')  # parse_args exports it when unset

    def parse(*args):
        monkeypatch.setattr('sys.argv', ['train.py', 'config.py', *args])
        return train_tool.parse_args()

    assert parse('--amp').amp_dtype is None
    assert parse('--amp', '--amp-dtype', 'float16').amp_dtype == 'float16'
    for args in (('--amp-dtype', 'float16'), ('--amp', '--amp-dtype', 'float32')):
        with pytest.raises(SystemExit):
            parse(*args)


# ------------------------------------------------------------ toy Mask R-CNN, Runner
def test_mmcv_cpu_kernels_still_refuse_half_inputs():
    """Why ``tools/train.py --amp`` autocasts only a detector's backbone and neck on the
    CPU (``CPUAmpOptimWrapper(autocast_modules=...)``): when this fails, mmcv has the
    kernels, and the whole detector could autocast as on CUDA."""
    boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 11., 11.]])
    scores, idxs = torch.tensor([0.9, 0.8]), torch.zeros(2, dtype=torch.long)
    for dtype in (torch.float16, torch.bfloat16):
        with pytest.raises(RuntimeError, match='expected scalar type Float'):
            batched_nms(boxes.to(dtype), scores.to(dtype), idxs, dict(iou_threshold=0.5))
    rois = torch.tensor([[0., 1., 1., 8., 8.]])
    with pytest.raises(NotImplementedError, match='BFloat16'):
        RoIAlign(7, 1.0, 2)(torch.randn(1, 4, 16, 16, dtype=torch.bfloat16),
                            rois.bfloat16())


@pytest.fixture(scope='module')
def toy_amp_data(tmp_path_factory):
    """A directory holding a tiny toy data set at the toy config's data_root."""
    cwd = tmp_path_factory.mktemp('toy_amp')
    generate(str(cwd / 'data' / 'toy_coco'), TOY_AMP)
    return cwd


class Recorder(Hook):
    """Per iteration: the loss and the loss scale (None without a scaler); the dtypes
    that a backbone convolution, the neck (what it returns) and the RPN's convolution
    computed in; the parameters before training."""

    def __init__(self, model):
        self.losses, self.scales = [], []
        self.dtypes = dict(backbone=set(), neck=set(), rpn=set())
        conv = next(m for m in model.backbone.modules() if isinstance(m, nn.Conv2d))
        for name, module in (('backbone', conv), ('neck', model.neck),
                             ('rpn', model.rpn_head.rpn_conv)):
            module.register_forward_hook(
                lambda module, inputs, output, name=name: self.dtypes[name].update(
                    o.dtype for o in (output if isinstance(output, tuple) else [output])))

    def before_train(self, runner):
        self.initial = {k: v.detach().clone() for k, v in runner.model.named_parameters()}

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self.losses.append(outputs['loss'].item())
        scaler = runner.optim_wrapper.loss_scaler
        self.scales.append(None if scaler is None else scaler.get_scale())


def train_toy(cwd, train_tool, monkeypatch, dtype):
    """(runner, recorder) after :data:`ITERS` iterations of the toy config as
    ``tools/train.py CONFIG --amp --amp-dtype dtype`` sets it up on the CPU (its command
    line and merge_args), on a smaller data set, without validation."""
    monkeypatch.setenv('LOCAL_RANK', '0')  # parse_args exports it when unset
    monkeypatch.setattr('sys.argv', ['train.py', str(TOY_CONFIG), '--amp', '--amp-dtype',
                                     dtype, '--work-dir', str(cwd / f'work_{dtype}')])
    monkeypatch.setattr(train_tool, 'get_device', lambda: 'cpu')
    args = train_tool.parse_args()
    cfg = Config.fromfile(args.config)
    cfg.train_cfg = dict(by_epoch=True, max_epochs=1)
    cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    cfg.train_dataloader.update(batch_size=BATCH_SIZE, num_workers=0,
                                persistent_workers=False)
    [resize] = (t for t in cfg.train_dataloader.dataset.pipeline if t.type == 'Resize')
    resize.scale = IMAGE_SCALE
    register_modules(scope_of(cfg))
    cfg = train_tool.merge_args(cfg, args)
    assert cfg.optim_wrapper.type == 'CPUAmpOptimWrapper'
    assert cfg.optim_wrapper.autocast_modules == ('backbone', 'neck')

    monkeypatch.chdir(cwd)  # the config's data_root is relative
    runner = Runner.from_cfg(cfg)
    recorder = Recorder(runner.model)
    runner.register_hook(recorder)
    runner.train()
    return runner, recorder


def changed(runner, recorder):
    return any(not torch.equal(p, recorder.initial[k])
               for k, p in runner.model.named_parameters())


def saved_optimizer_state(runner):
    return _load_checkpoint(str(Path(runner.work_dir) / 'epoch_1.pth'))['optimizer']


def assert_trunk_autocast(runner, rec, dtype):
    """The backbone and neck ran in ``dtype``, what the neck returned and the heads in
    float32; the forwards are the classes' again."""
    assert runner.iter == ITERS
    assert rec.dtypes == dict(backbone={dtype}, neck={torch.float32}, rpn={torch.float32})
    assert all(math.isfinite(loss) for loss in rec.losses), rec.losses
    assert all('forward' not in m.__dict__ for m in runner.model.modules())


def test_toy_mask_rcnn_trains_in_float16_with_loss_scaling(toy_amp_data, train_tool,
                                                           monkeypatch):
    runner, rec = train_toy(toy_amp_data, train_tool, monkeypatch, 'float16')

    assert_trunk_autocast(runner, rec, torch.float16)
    # The scaler ran every step (a step whose float16 gradients overflow is skipped,
    # halving the scale), and at least one step went through.
    assert None not in rec.scales, rec.scales
    assert changed(runner, rec), f'every step overflowed; scales {rec.scales}'
    # The checkpoint holds the scaler's state: a resumed run scales as this one would.
    assert saved_optimizer_state(runner)['loss_scaler'] == \
        runner.optim_wrapper.loss_scaler.state_dict()


def test_toy_mask_rcnn_trains_in_bfloat16(toy_amp_data, train_tool, monkeypatch):
    runner, rec = train_toy(toy_amp_data, train_tool, monkeypatch, 'bfloat16')

    assert_trunk_autocast(runner, rec, torch.bfloat16)
    assert rec.scales == [None] * ITERS
    assert changed(runner, rec)
    assert 'loss_scaler' not in saved_optimizer_state(runner)
