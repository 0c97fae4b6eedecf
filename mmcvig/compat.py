"""Compatibility fixes for the pinned stack, in one place.

Each fix names the versions it repairs, checks that the need is there before it acts, and
has a test in tests/test_compat.py that fails when an upgrade makes it unnecessary or
wrong (the test asserts that the pinned stack still misbehaves without the fix). None
replaces an attribute of another module: each goes through an API that torch or
mmengine offers for the purpose.

**Checkpoints under torch's ``weights_only`` unpickler** (torch >= 2.6 with mmengine
0.10.7; :func:`apply_compat`, run at ``import mmcvig``). Since torch 2.6, ``torch.load``
defaults to ``weights_only=True``: it rebuilds tensors and plain containers only, and
refuses any other global a pickle names unless it is allow-listed. mmengine 0.10.7 calls
``torch.load`` without the argument, and the checkpoints its Runner saves carry more
than tensors: the message hub's ``HistoryBuffer`` objects, which hold the logged values
as numpy arrays and name their statistics methods, and numpy scalars in the runtime
info. Resuming from, or testing, such a checkpoint fails with ``Weights only load failed
... Unsupported global``. We allow-list exactly the globals those checkpoints name (found
by saving and resuming a real Runner, see tests/test_compat.py) with torch's own
``torch.serialization.add_safe_globals``, rather than pass ``weights_only=False``: a
checkpoint is untrusted input, and the full unpickler calls whatever a file names.

**torchrun without a GPU** (mmengine 0.10.7; :func:`init_dist_without_cuda`, called by
tools/train.py). mmengine's ``pytorch`` launcher calls ``torch.cuda.set_device`` before
``init_process_group`` whatever the backend, so ``tools/dist_train.sh`` dies on a CPU
machine with "Found no NVIDIA driver". The Runner only initialises the process group
when none exists (``Runner.setup_env``: ``if self.distributed and not
is_distributed()``), so the tool starts it first, without that call, and mmengine takes
it from there.
"""
import pickle

import numpy as np
import torch
from mmengine.logging import HistoryBuffer
from mmengine.utils import digit_version

# The methods HistoryBuffer._set_default_statistics registers.
_STATISTICS = ('min', 'max', 'current', 'mean')


def _history_buffer_statistic(owner, name):
    """Stands in for ``builtins.getattr`` while unpickling.

    A HistoryBuffer pickles its statistics methods, and pickle (protocol 2, which
    ``torch.save`` uses) writes a method such as ``HistoryBuffer.mean`` as
    ``getattr(HistoryBuffer, 'mean')``. Allowing ``getattr`` itself would let a file
    reach any attribute of any allowed object (``getattr.__self__`` is the builtins
    module, ...) and ``HistoryBuffer.__setstate__`` stores what it gets in a dict of
    methods that mmengine later calls; this resolves those four methods and nothing else.
    """
    if owner is HistoryBuffer and name in _STATISTICS:
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(
        f'getattr({owner!r}, {name!r}) is not allowed in a checkpoint')


def checkpoint_globals():
    """The globals mmengine's checkpoints name beyond torch's defaults, as entries for
    ``torch.serialization.add_safe_globals`` (an object, or (object, name in the file))."""
    multiarray = np._core.multiarray
    return [
        HistoryBuffer,
        (_history_buffer_statistic, 'builtins.getattr'),
        # An ndarray pickles as `_reconstruct(ndarray, shape, dtype)` plus its state,
        # a numpy scalar as `scalar(dtype, raw bytes)`, a dtype as `dtype(code, ...)`
        # plus a state that its class (one per dtype) sets. HistoryBuffer logs float64
        # values with int64 counts; the runtime info's numpy scalar (`eta`) is float64.
        np.ndarray,
        np.dtype,
        np.dtypes.Float64DType,
        np.dtypes.Int64DType,
        # Not seen in our checkpoints, but a metric or hook that logs a float32/int32
        # numpy scalar would need them; dtype classes carry no code.
        np.dtypes.Float32DType,
        np.dtypes.Int32DType,
        multiarray._reconstruct,
        multiarray.scalar,
        # Files written under numpy < 2 name the same functions in numpy.core.
        (multiarray._reconstruct, 'numpy.core.multiarray._reconstruct'),
        (multiarray.scalar, 'numpy.core.multiarray.scalar'),
    ]


def init_dist_without_cuda(launcher: str, backend: str = 'gloo', init_backend: str = 'torch',
                           **kwargs) -> bool:
    """Start the process group of a ``torchrun`` job on a machine without accelerator.

    Does what mmengine 0.10.7's ``init_dist('pytorch', ...)`` does, minus its
    unconditional ``torch.cuda.set_device``, and only where that call would fail: the
    ``pytorch`` launcher, no CUDA device where mmengine would want one (it handles MLU,
    NPU and MUSA machines itself; that leaves the CPU and Apple's MPS), and no process
    group yet. Call it before building the Runner, with
    the config's ``env_cfg.dist_cfg``; the Runner then finds the group and keeps it.
    (tools/train.py also picks the gloo backend and a DDP wrapper that accepts CPU
    modules there: mmcvig.engine.CPUDistributedDataParallel.)

    Returns:
        bool: whether it started the process group.
    """
    from mmengine.device import get_device
    from mmengine.dist import is_distributed
    if launcher != 'pytorch' or get_device() not in ('cpu', 'mps') or is_distributed():
        return False
    if init_backend != 'torch':
        raise ValueError(f'init_backend {init_backend!r} needs an accelerator; only "torch" '
                         'runs on the CPU')
    # The rank and world size come from torchrun's environment (env:// rendezvous).
    torch.distributed.init_process_group(backend=backend, **kwargs)
    return True


def needs_checkpoint_allow_list() -> bool:
    """Whether ``torch.load`` unpickles with ``weights_only=True`` by default (torch 2.6
    on), which is what refuses mmengine's checkpoints."""
    return digit_version(torch.__version__) >= digit_version('2.6.0')


def apply_compat():
    """Apply the fixes that run at import; calling it again changes nothing."""
    if needs_checkpoint_allow_list():
        # torch keeps the allow-list as a set: adding the same entries again is a no-op.
        torch.serialization.add_safe_globals(checkpoint_globals())
