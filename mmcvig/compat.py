"""Compatibility fixes for the pinned stack, in one place.

:func:`apply_compat` runs at ``import mmcvig``; it is idempotent.

**Checkpoints under torch's ``weights_only`` unpickler.** Since torch 2.6, ``torch.load``
defaults to ``weights_only=True``: it rebuilds tensors and plain containers only, and
refuses any other global a pickle names unless it is allow-listed. mmengine 0.10.7 calls
``torch.load`` without the argument, and the checkpoints its Runner saves carry more
than tensors: the message hub's ``HistoryBuffer`` objects, which hold the logged values
as numpy arrays and name their statistics methods, and numpy scalars in the runtime
info. Resuming from, or testing, such a checkpoint fails with ``Weights only load failed
... Unsupported global``. We allow-list exactly the globals those checkpoints name (found
by saving and resuming a real Runner, see tests/test_compat.py) rather than pass
``weights_only=False``: a checkpoint is untrusted input, and the full unpickler calls
whatever a file names.
"""
import pickle

import numpy as np
import torch
from mmengine.logging import HistoryBuffer

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


def _init_dist_pytorch_without_cuda(backend='gloo', init_backend='torch', **kwargs):
    """mmengine's torchrun initialisation, minus its unconditional
    ``torch.cuda.set_device`` which fails on a machine without GPU."""
    if init_backend != 'torch':
        raise ValueError(f'init_backend {init_backend!r} needs a GPU; only "torch" runs '
                         'on the CPU')
    torch.distributed.init_process_group(backend=backend, **kwargs)


def _patch_cpu_distributed_launch():
    """**Distributed training without GPU.** mmengine 0.10.7's ``pytorch`` launcher calls
    ``torch.cuda.set_device(local_rank)`` before ``init_process_group``, whatever the
    backend, so ``tools/dist_train.sh`` (torchrun) dies on a CPU machine with "Found no
    NVIDIA driver". Where CUDA is unavailable, the launcher skips that call; on GPU
    machines nothing changes. (tools/train.py also picks the gloo backend and a DDP
    wrapper that accepts CPU modules there.)"""
    if torch.cuda.is_available():
        return
    from mmengine.dist import utils as dist_utils
    dist_utils._init_dist_pytorch = _init_dist_pytorch_without_cuda


def apply_compat():
    """Apply every fix; calling it again changes nothing."""
    # torch keeps the allow-list as a set: adding the same entries again is a no-op.
    torch.serialization.add_safe_globals(checkpoint_globals())
    _patch_cpu_distributed_launch()
