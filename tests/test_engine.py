"""mmcvig.engine: CPUAmpOptimWrapper, what tools/train.py --amp uses on a CPU-only machine,
and RNGStateHook's CUDA generator states, with a fake torch.cuda (no GPU needed; the exact
resume of a real run is tests/test_reliability_training.py)."""
import io
import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn as nn
from mmengine.optim import AmpOptimWrapper

from mmcvig.engine import CPUAmpOptimWrapper, RNGStateHook
from mmcvig.engine.rng_state_hook import process_states


@pytest.mark.skipif(torch.cuda.is_available(), reason='the CPU-only case')
def test_mmengine_amp_refuses_the_cpu():
    # Why CPUAmpOptimWrapper exists; when mmengine lifts this, drop it.
    model = nn.Linear(4, 2)
    with pytest.raises(AssertionError, match='only available training on gpu'):
        AmpOptimWrapper(optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                        dtype='bfloat16')


def test_forward_in_bfloat16_update_in_float32():
    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    before = model.weight.detach().clone()
    wrapper = CPUAmpOptimWrapper(optimizer=torch.optim.SGD(model.parameters(), lr=0.1))

    with wrapper.optim_context(model):
        outputs = model(torch.randn(3, 4))
    assert outputs.dtype == torch.bfloat16
    wrapper.update_params(outputs.float().pow(2).mean())

    assert model.weight.dtype == torch.float32
    assert not torch.equal(model.weight, before)


# ------------------------------------------------------------------------- RNGStateHook
class FakeCuda:
    """Stands in for torch.cuda's generator functions: ``count`` devices whose states are
    distinct ByteTensors; records what is restored."""

    def __init__(self, monkeypatch):
        self.monkeypatch = monkeypatch
        self.restored = []

    def use(self, count: int, initialized: bool = True, seed: int = 0):
        self.states = [torch.arange(16, dtype=torch.uint8) + 16 * i + seed
                       for i in range(count)]
        for name, value in dict(is_available=lambda: count > 0,
                                is_initialized=lambda: count > 0 and initialized,
                                device_count=lambda: count,
                                get_rng_state_all=self.get_rng_state_all,
                                set_rng_state_all=self.set_rng_state_all).items():
            self.monkeypatch.setattr(torch.cuda, name, value)
        return self

    def get_rng_state_all(self):
        if not torch.cuda.is_initialized():
            raise AssertionError('would initialise CUDA')
        return [state.clone() for state in self.states]

    def set_rng_state_all(self, states):
        if len(states) > len(self.states):
            raise RuntimeError('invalid device index')  # as torch.cuda does
        self.restored.append([state.clone() for state in states])


@pytest.fixture
def fake_cuda(monkeypatch):
    return FakeCuda(monkeypatch)


def fake_runner():
    warnings = []
    return SimpleNamespace(logger=SimpleNamespace(warning=warnings.append)), warnings


def save(hook, runner):
    """A checkpoint through the hook, written and read back as ``--resume`` reads it
    (weights_only: the states must be tensors and plain values)."""
    checkpoint = dict(meta=dict(epoch=1))
    hook.before_save_checkpoint(runner, checkpoint)
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def draws():
    return torch.rand(3), np.random.rand(3), random.random()


def assert_same_draws(actual, expected):
    torch.testing.assert_close(actual[0], expected[0], rtol=0, atol=0)
    np.testing.assert_array_equal(actual[1], expected[1])
    assert actual[2] == expected[2]


def test_rng_state_hook_restores_cuda_states_with_the_others(fake_cuda):
    hook, (runner, warnings) = RNGStateHook(), fake_runner()
    fake_cuda.use(2)
    checkpoint = save(hook, runner)
    saved = fake_cuda.states
    expected = draws()

    fake_cuda.use(2, seed=100)  # the generators moved on, or a new process re-seeded
    draws()
    hook.after_load_checkpoint(runner, checkpoint)
    assert_same_draws(draws(), expected)
    assert len(fake_cuda.restored) == 1
    assert [s.tolist() for s in fake_cuda.restored[0]] == [s.tolist() for s in saved]
    assert not warnings


def test_rng_state_hook_resumes_a_gpu_checkpoint_without_cuda(fake_cuda):
    hook, (runner, warnings) = RNGStateHook(), fake_runner()
    fake_cuda.use(2)
    checkpoint = save(hook, runner)
    expected = draws()

    fake_cuda.use(0)
    hook.after_load_checkpoint(runner, checkpoint)
    assert_same_draws(draws(), expected)  # the CPU generators are restored all the same
    assert not fake_cuda.restored
    assert len(warnings) == 1 and 'of 2 devices, this process sees 0' in warnings[0]


@pytest.mark.parametrize('count', [1, 4])
def test_rng_state_hook_restores_the_devices_both_runs_have(fake_cuda, count):
    hook, (runner, warnings) = RNGStateHook(), fake_runner()
    fake_cuda.use(2)
    checkpoint = save(hook, runner)
    saved = fake_cuda.states

    fake_cuda.use(count, seed=100)
    hook.after_load_checkpoint(runner, checkpoint)
    assert [s.tolist() for s in fake_cuda.restored[0]] == \
        [s.tolist() for s in saved[:count]]
    assert len(warnings) == 1 and f'this process sees {count}' in warnings[0]


def test_rng_state_hook_leaves_an_uninitialised_cuda_alone(fake_cuda):
    """A CPU run on a GPU machine: saving does not initialise CUDA, and the checkpoint
    resumes there, and on a machine without CUDA, without a warning."""
    hook, (runner, warnings) = RNGStateHook(), fake_runner()
    fake_cuda.use(2, initialized=False)
    checkpoint = save(hook, runner)  # FakeCuda refuses to be asked
    assert checkpoint['rng_state']['cuda'] == []
    for count in (2, 0):
        fake_cuda.use(count, initialized=False)
        hook.after_load_checkpoint(runner, checkpoint)
    assert not fake_cuda.restored and not warnings


def test_rng_state_hook_resumes_a_checkpoint_without_cuda_states(fake_cuda):
    """A checkpoint of the version that saved no CUDA states."""
    hook, (runner, warnings) = RNGStateHook(), fake_runner()
    fake_cuda.use(0)
    checkpoint = save(hook, runner)
    del checkpoint['rng_state']['cuda']
    expected = draws()

    fake_cuda.use(2)
    hook.after_load_checkpoint(runner, checkpoint)
    assert_same_draws(draws(), expected)
    assert not fake_cuda.restored
    assert len(warnings) == 1 and 'no CUDA generator states' in warnings[0]


@pytest.mark.parametrize('num_saved', [1, 2])
def test_rng_state_hook_restores_the_states_of_its_own_rank(fake_cuda, num_saved):
    """A distributed checkpoint holds every process's states (``ranks``): a run of as
    many processes restores its rank's, another restores the saving process's states,
    with a warning. This run is one process: rank 0 of 1."""
    hook, (runner, warnings) = RNGStateHook(), fake_runner()
    fake_cuda.use(0)
    own = process_states()
    own_draws = draws()
    checkpoint = save(hook, runner)
    checkpoint['rng_state']['ranks'] = [own, process_states()][:num_saved]
    saver_draws = draws()

    hook.after_load_checkpoint(runner, checkpoint)
    if num_saved == 1:
        assert_same_draws(draws(), own_draws)
        assert not warnings
    else:
        assert_same_draws(draws(), saver_draws)
        assert len(warnings) == 1 and 'states of 2 processes, this run has 1' in warnings[0]
