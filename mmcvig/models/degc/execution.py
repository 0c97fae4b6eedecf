"""How DEGC executes: static control flow while exporting or compiling, and no host
read in the sync-free mode (the default for CUDA inputs)."""
from typing import Optional

import torch
from torch import Tensor


def exporting() -> bool:
    """True while tracing or exporting to ONNX: shapes are frozen into the graph."""
    return torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()


def static_shapes() -> bool:
    """True while tracing, exporting or compiling: shapes must not depend on values."""
    return exporting() or torch.compiler.is_compiling()


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
