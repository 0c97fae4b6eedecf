"""How DEGC executes: static control flow while exporting or compiling, no host read in
the sync-free mode (the default for CUDA inputs), float32 where autocast would lose the
partition, and the forward's graphs reused when a checkpoint recomputes."""
import collections
import contextlib
import contextvars
import threading
from typing import Callable, Optional, Tuple

import torch
from torch import Tensor


def exporting() -> bool:
    """True while tracing or exporting to ONNX: shapes are frozen into the graph."""
    return torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()


def static_shapes() -> bool:
    """True while tracing, exporting or compiling: shapes must not depend on values."""
    return exporting() or torch.compiler.is_compiling()


def full_precision(x: Tensor):
    r"""A context in which autocast is off for ``x``'s device.

    DEGC's arithmetic that learns nothing (k-means, the k-NN similarities, the cluster
    sums and means) runs in float32 inside it: autocast would otherwise re-cast the
    float32 inputs of ``baddbmm`` and ``@`` to float16 or bfloat16, where
    :math:`\|c\|^2` overflows, sums of thousands of tokens overflow, and rounding
    turns near ties into other labels and neighbours. Inside
    :func:`autocast_reaches_degc` it is a no-op.
    """
    if _AUTOCAST_IN_DEGC.get():
        return contextlib.nullcontext()
    return torch.autocast(x.device.type, enabled=False)


# Whether autocast reaches DEGC's float32 steps: only to measure what keeping them
# in float32 costs (mmcvig.analysis.measure_float32_overhead).
_AUTOCAST_IN_DEGC = contextvars.ContextVar('autocast_in_degc', default=False)


@contextlib.contextmanager
def autocast_reaches_degc():
    """Let autocast reach DEGC's float32 steps, as before they kept float32."""
    token = _AUTOCAST_IN_DEGC.set(True)
    try:
        yield
    finally:
        _AUTOCAST_IN_DEGC.reset(token)


def at_least_float32(x: Tensor) -> Tensor:
    """``x`` in float32 if its dtype is narrower (float16, bfloat16); float32 and float64
    as they are, so a float64 run (a parity check) keeps float64 throughout."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def resolve_sync_free(setting: Optional[bool], x: Tensor) -> bool:
    """The sync-free mode for input ``x``: ``setting``, or for ``None`` whether ``x`` is
    on CUDA; always on while compiling or exporting, which need static control flow."""
    auto = x.is_cuda if setting is None else setting
    return auto or static_shapes()


def row_offsets(batch: int, rows_per_image: int, device) -> Optional[Tensor]:
    """:math:`(B, 1)` offsets ``b * rows_per_image`` that turn per-image row indices into
    indices into the images' rows stacked, or ``None`` where none is needed.

    A single image needs no offset and, eager, gets none (k-means indexes rows every
    iteration, where each operator counts); a traced or compiled graph always adds it,
    so that it holds for any batch.
    """
    if batch == 1 and not static_shapes():
        return None
    return torch.arange(batch, device=device).unsqueeze(1) * rows_per_image


def flat_index(index: Tensor, rows_per_image: int) -> Tensor:
    """Per-image row indices :math:`(B, ...)` -> indices into the images' rows stacked
    (``b * rows_per_image + index``), as one ``index_select`` or ``index_add`` over a
    whole batch wants them (see :func:`row_offsets`)."""
    offset = row_offsets(index.shape[0], rows_per_image, index.device)
    if offset is None:
        return index
    return index + offset.view(-1, *([1] * (index.dim() - 1)))


class _Recompute(threading.local):
    """Per thread: the partitions and graphs a checkpointed forward keeps, and whether
    DEGC now runs in that forward (``record``) or in its recomputation (``replay``)."""
    stack: list

    def __init__(self):
        self.stack = []


_RECOMPUTE = _Recompute()


@contextlib.contextmanager
def _recompute_mode(store: collections.deque, mode: str):
    _RECOMPUTE.stack.append((store, mode))
    try:
        yield
    finally:
        _RECOMPUTE.stack.pop()


def keep_graphs_for_recompute():
    """``context_fn`` for ``torch.utils.checkpoint.checkpoint(use_reentrant=False)``:
    the recomputation in the backward reuses the partitions and graphs of the forward.

    They carry no gradient, so recomputing them is wasted time, and it can be wrong:
    k-means turns last-bit differences (CUDA's ``index_add`` is not bitwise
    deterministic) into other labels at near ties, and the gradients would then belong
    to another graph than the forward's.
    """
    store = collections.deque()
    return _recompute_mode(store, 'record'), _recompute_mode(store, 'replay')


def forward_graph(build: Callable[[], Tuple]) -> Tuple:
    """``build()`` (the partition and the graph of a DEGC), except in the recomputation
    of a checkpoint made with :func:`keep_graphs_for_recompute`, which takes the
    forward's own, in the order the forward made them."""
    if not _RECOMPUTE.stack:
        return build()
    store, mode = _RECOMPUTE.stack[-1]
    if mode == 'replay':
        return store.popleft()
    result = build()
    store.append(result)
    return result
