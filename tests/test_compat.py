"""mmcvig.compat: mmengine checkpoints load under torch's ``weights_only`` unpickler,
and anything else is still refused; torchrun jobs start without a GPU. Each fix also
has a test that the pinned stack still needs it: when one fails after an upgrade, drop
(or redo) the fix it names."""
import os
import pickle
import shlex
import socket
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import pytest
import torch
import torch.nn as nn
from mmengine.device import get_device
from mmengine.hooks import Hook
from mmengine.logging import HistoryBuffer
from mmengine.model import BaseModel
from mmengine.runner import Runner, load_checkpoint
from mmengine.runner.checkpoint import _load_checkpoint
from torch.utils.data import Dataset

from mmcvig import compat


class ToyModel(BaseModel):

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(2, 1)

    def forward(self, inputs, targets, mode='tensor'):
        outputs = self.linear(inputs).squeeze(1)
        if mode == 'loss':
            return dict(loss=((outputs - targets)**2).mean())
        return outputs


class ToyDataset(Dataset):
    metainfo = dict(classes=('toy', ))

    def __len__(self):
        return 8

    def __getitem__(self, index):
        inputs = torch.tensor([float(index), 1.])
        return dict(inputs=inputs, targets=inputs.sum())


class ResumeProbe(Hook):
    """Records where training starts: after Runner.load_or_resume, before any step."""

    def before_train(self, runner):
        self.iter = runner.iter
        self.state_dict = {k: v.clone() for k, v in runner.model.state_dict().items()}


def build_runner(work_dir, name, max_iters, resume=False):
    # experiment_name is unique per runner: mmengine keys its global MessageHub,
    # logger and visualizer instances by it (default: a timestamp to the second).
    return Runner(
        model=ToyModel(),
        work_dir=str(work_dir),
        experiment_name=name,
        train_dataloader=dict(
            dataset=ToyDataset(),
            sampler=dict(type='DefaultSampler', shuffle=False),
            collate_fn=dict(type='default_collate'),
            batch_size=2,
            num_workers=0),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01, momentum=0.9)),
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        default_hooks=dict(
            logger=dict(type='LoggerHook', interval=1),
            checkpoint=dict(type='CheckpointHook', interval=2, by_epoch=False)),
        resume=resume,
        default_scope='mmengine',
        randomness=dict(seed=0))


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """A work dir with the checkpoint of 2 iterations of a real Runner."""
    work_dir = tmp_path_factory.mktemp('toy_runner')
    runner = build_runner(work_dir, 'compat_train', max_iters=2)
    runner.train()
    return work_dir, work_dir / 'iter_2.pth'


def test_runner_resumes_its_own_checkpoint(trained):
    work_dir, ckpt = trained
    runner = build_runner(work_dir, 'compat_resume', max_iters=3, resume=True)
    probe = ResumeProbe()
    runner.register_hook(probe)
    runner.train()

    assert probe.iter == 2
    saved = _load_checkpoint(str(ckpt), map_location='cpu')
    assert saved['meta']['iter'] == 2
    for key, value in saved['state_dict'].items():
        torch.testing.assert_close(probe.state_dict[key], value, rtol=0, atol=0)
    assert runner.iter == 3


def test_checkpoint_needs_the_allow_list(trained):
    """The pinned torch and mmengine still refuse a Runner's checkpoint without it."""
    _, ckpt = trained
    assert compat.needs_checkpoint_allow_list()
    allowed = torch.serialization.get_safe_globals()
    torch.serialization.clear_safe_globals()
    try:
        _load_checkpoint(str(ckpt), map_location='cpu')
    except pickle.UnpicklingError as error:
        assert 'Unsupported global' in str(error)
    else:
        pytest.fail('mmengine checkpoints load without the allow-list now (torch or '
                    'mmengine upgraded): drop checkpoint_globals from mmcvig/compat.py')
    finally:
        torch.serialization.add_safe_globals(allowed)
    _load_checkpoint(str(ckpt), map_location='cpu')


def test_history_buffer_statistics_are_the_allowed_ones():
    # A statistic that mmengine adds would be pickled and refused; one it drops would
    # stay allowed for nothing.
    assert set(HistoryBuffer._statistics_methods) == set(compat._STATISTICS)


class Payload:
    """Runs a shell command when unpickled, as a hostile checkpoint would."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command, )


def test_arbitrary_objects_are_refused(tmp_path):
    marker = tmp_path / 'payload_ran'
    ckpt = tmp_path / 'hostile.pth'
    torch.save(
        dict(state_dict=ToyModel().state_dict(),
             meta=Payload(f'touch {shlex.quote(str(marker))}')), ckpt)

    with pytest.raises(pickle.UnpicklingError, match='system'):
        load_checkpoint(ToyModel(), str(ckpt), map_location='cpu')
    assert not marker.exists()

    # The payload is live: a full unpickler does run it.
    torch.load(ckpt, weights_only=False)
    assert marker.exists()


def test_apply_compat_is_idempotent():
    compat.apply_compat()
    before = set(torch.serialization.get_safe_globals())
    compat.apply_compat()
    assert set(torch.serialization.get_safe_globals()) == before
    assert set(compat.checkpoint_globals()) <= before


class HostileGetattr:
    """Asks the unpickler for an attribute other than HistoryBuffer's statistics."""

    def __reduce__(self):
        return getattr, (HistoryBuffer, '__init__')


def test_getattr_is_limited_to_history_buffer_statistics(tmp_path):
    ckpt = tmp_path / 'getattr.pth'
    torch.save(dict(meta=HostileGetattr()), ckpt)
    with pytest.raises(pickle.UnpicklingError, match='not allowed in a checkpoint'):
        _load_checkpoint(str(ckpt), map_location='cpu')


def test_checkpoint_written_under_numpy_1(trained, tmp_path):
    # numpy < 2 names its pickling helpers numpy.core.multiarray.*: rename them in a
    # real checkpoint, as a numpy 1 process would have written it.
    _, ckpt = trained
    legacy = tmp_path / 'numpy1.pth'
    with zipfile.ZipFile(ckpt) as src, zipfile.ZipFile(legacy, 'w') as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith('/data.pkl'):
                assert b'numpy._core.multiarray' in data
                data = data.replace(b'numpy._core.multiarray', b'numpy.core.multiarray')
            dst.writestr(info, data)

    loaded = _load_checkpoint(str(legacy), map_location='cpu')
    original = _load_checkpoint(str(ckpt), map_location='cpu')
    hub = loaded['message_hub']
    assert hub['runtime_info']['eta'] == original['message_hub']['runtime_info']['eta']
    np.testing.assert_array_equal(
        hub['log_scalars']['train/loss'].data[0],
        original['message_hub']['log_scalars']['train/loss'].data[0])


# ------------------------------------------------------------------ torchrun, no GPU
def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def run_as_torchrun_rank(code):
    """Runs ``code`` in a fresh interpreter with the environment torchrun gives the only
    process of a one-process job."""
    env = dict(os.environ, RANK='0', LOCAL_RANK='0', WORLD_SIZE='1',
               MASTER_ADDR='127.0.0.1', MASTER_PORT=str(free_port()), OMP_NUM_THREADS='1')
    # From the repository root: `python -c` puts the working directory on the path.
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return subprocess.run([sys.executable, '-c', textwrap.dedent(code)], env=env, cwd=root,
                          capture_output=True, text=True, timeout=120)


needs_cpu_only = pytest.mark.skipif(get_device() != 'cpu',
                                    reason='the fix is for machines without accelerator')


@needs_cpu_only
def test_mmengine_torchrun_launch_still_needs_a_gpu():
    result = run_as_torchrun_rank("""
        from mmengine.dist import init_dist
        init_dist('pytorch', backend='gloo')
    """)
    if result.returncode == 0:
        pytest.fail('mmengine starts torchrun processes without a GPU now: drop '
                    'init_dist_without_cuda (mmcvig/compat.py, tools/train.py)')
    assert 'set_device' in result.stderr, result.stderr[-3000:]


@needs_cpu_only
def test_init_dist_without_cuda_starts_the_group_mmengine_uses():
    result = run_as_torchrun_rank("""
        import torch
        from mmengine import dist
        from mmcvig.compat import init_dist_without_cuda
        assert not init_dist_without_cuda('none')
        assert init_dist_without_cuda('pytorch', backend='gloo')
        assert not init_dist_without_cuda('pytorch', backend='gloo')  # already started
        # What Runner.setup_env checks before it would call init_dist itself.
        assert dist.is_distributed()
        assert (dist.get_rank(), dist.get_world_size(), dist.get_backend()) == (0, 1, 'gloo')
        value = torch.ones(2)
        dist.all_reduce(value)
        assert value.tolist() == [1., 1.]
        print('ok')
    """)
    assert result.returncode == 0 and 'ok' in result.stdout, result.stderr[-3000:]


def test_no_attribute_of_another_module_is_replaced():
    import mmengine.dist.utils
    import mmengine.runner.checkpoint

    import mmcvig  # noqa: F401
    assert mmengine.dist.utils._init_dist_pytorch.__module__ == 'mmengine.dist.utils'
    assert mmengine.dist.init_dist is mmengine.dist.utils.init_dist
    assert torch.load is torch.serialization.load
    assert mmengine.runner.checkpoint.torch.load is torch.serialization.load
