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
