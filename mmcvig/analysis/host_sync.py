"""Count the host-device synchronisations a piece of code makes, on any device.

On a GPU, every value read back to the host (``.item()``, ``bool(t)``, ``int(t)``,
``torch.equal``, ``.tolist()``) and every operator whose output shape depends on the
data (``nonzero``, boolean-mask indexing, ``unique``, ``bincount``, ``repeat_interleave``
with tensor repeats) waits for the launch queue to drain. ``torch.cuda`` can only flag
them on a GPU (``torch.cuda.set_sync_debug_mode``); :class:`HostSyncCounter` sees the
same calls on the CPU too, so the sync-free forward is testable on any machine.

It watches at two levels, both through PyTorch's own mode stacks (nothing is patched):
the dispatcher (a :class:`~torch.utils._python_dispatch.TorchDispatchMode`: every read
of a scalar ends in ``aten._local_scalar_dense``) and the Python API (a
:class:`~torch.overrides.TorchFunctionMode`: ``tolist`` and ``numpy`` copy without any
dispatched operator).
"""
from collections import Counter

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten

# Operators that read a value to the host, or size their output from the data.
_SYNC_OPS = {
    aten._local_scalar_dense, aten.is_nonzero, aten.equal, aten.nonzero, aten.argwhere,
    aten.masked_select, aten._unique2, aten.unique_dim, aten.unique_consecutive,
    aten.bincount, aten.histc
}
_SYNC_METHODS = {torch.Tensor.tolist, torch.Tensor.numpy, torch.Tensor.__array__}


def _is_bool_index(indices) -> bool:
    return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in indices if
               i is not None)


class _DispatchWatcher(TorchDispatchMode):

    def __init__(self, counts: Counter):
        super().__init__()
        self.counts = counts

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        packet = func.overloadpacket
        if packet in _SYNC_OPS:
            self.counts[packet.__name__] += 1
        elif func is aten.repeat_interleave.Tensor and (kwargs or {}).get('output_size') is None:
            # The one overload left at dispatch (integer repeats decompose before it):
            # without output_size its result size is read from the repeats.
            self.counts['repeat_interleave'] += 1
        elif packet in (aten.index, aten.index_put, aten.index_put_) and \
                _is_bool_index(args[1]):
            self.counts[f'{packet.__name__} (boolean mask)'] += 1
        return func(*args, **(kwargs or {}))


class _FunctionWatcher(TorchFunctionMode):

    def __init__(self, counts: Counter):
        super().__init__()
        self.counts = counts

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in _SYNC_METHODS:
            self.counts[func.__name__] += 1
        return func(*args, **(kwargs or {}))


class HostSyncCounter:
    """Context manager counting synchronising calls, by name.

    Example::

        with HostSyncCounter() as syncs:
            model(images)
        assert syncs.total == 0, syncs.counts

    Attributes:
        counts (Counter): calls per operator or method name.
    """

    def __init__(self):
        self.counts = Counter()
        self._modes = (_FunctionWatcher(self.counts), _DispatchWatcher(self.counts))

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def __enter__(self) -> 'HostSyncCounter':
        for mode in self._modes:
            mode.__enter__()
        return self

    def __exit__(self, *exc):
        for mode in reversed(self._modes):
            mode.__exit__(*exc)
        return False
