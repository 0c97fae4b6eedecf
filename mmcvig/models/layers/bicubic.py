"""Bicubic resizing as two matrix products, for ``torch.use_deterministic_algorithms``.

The backward of ``F.interpolate(mode='bicubic')`` and of ``F.grid_sample`` raises on
CUDA in deterministic mode (their kernels accumulate with atomics). Bicubic resizing is
separable, so resizing a map :math:`P` :math:`(C, H_0, W_0)` to :math:`h \\times w` is
:math:`R P C^\\top` with :math:`R` :math:`(h, H_0)` and :math:`C` :math:`(w, W_0)` the 1-D
interpolation matrices, whose backward is two matrix products. Same taps and weights as
``F.interpolate(..., mode='bicubic', align_corners=False)``: source position
:math:`(j + 0.5) H_0 / h - 0.5`, four taps clamped to the border, cubic convolution with
:math:`A = -0.75`.
"""
import torch
from torch import Tensor

_A = -0.75  # PyTorch's (and OpenCV's) cubic convolution coefficient


def _near(t: Tensor) -> Tensor:
    """Cubic convolution kernel for :math:`|t| \\le 1`."""
    return ((_A + 2) * t - (_A + 3)) * t * t + 1


def _far(t: Tensor) -> Tensor:
    """Cubic convolution kernel for :math:`1 < |t| < 2`."""
    return ((_A * t - 5 * _A) * t + 8 * _A) * t - 4 * _A


def bicubic_matrix(sizes: Tensor, length: int, source: int) -> Tensor:
    """:math:`(B, L, S)` matrices that resize a length-``source`` signal to ``sizes[b]``
    entries, rows from ``sizes[b]`` to ``length`` zero (batch padding).

    Args:
        sizes (Tensor): :math:`(B,)` output length of every image, at most ``length``.
        length (int): :math:`L`, rows of every matrix.
        source (int): :math:`S`, the input length.
    """
    # Positions and weights in float64: float32 would be 1e-6 off interpolate's (the
    # matrices are small; the product takes the map's dtype).
    sizes = sizes.view(-1, 1).double()
    out = torch.arange(length, device=sizes.device, dtype=torch.float64)
    position = (out + 0.5) * (source / sizes) - 0.5  # (B, L)
    first = position.floor()
    t = position - first
    weights = (_far(t + 1), _near(t), _near(1 - t), _far(2 - t))
    columns = torch.arange(source, device=sizes.device)
    matrix = 0
    for offset, weight in zip((-1, 0, 1, 2), weights):
        tap = (first.long() + offset).clamp(0, source - 1)
        matrix = matrix + weight.unsqueeze(-1) * (tap.unsqueeze(-1) == columns)
    return matrix * (out < sizes).unsqueeze(-1)


def bicubic_resize(x: Tensor, rows: Tensor, cols: Tensor, height: int, width: int) -> Tensor:
    """``x`` :math:`(1, C, H_0, W_0)` resized for every image ``b`` to ``rows[b] x
    cols[b]``, placed at the top left of a :math:`(B, C, H, W)` map of zeros.

    Args:
        x (Tensor): :math:`(1, C, H_0, W_0)`.
        rows, cols (Tensor): :math:`(B,)` every image's own size.
        height, width (int): :math:`H, W`, the map's size.
    """
    source_rows, source_cols = x.shape[-2:]
    with torch.no_grad():
        row_matrix = bicubic_matrix(rows, height, source_rows).to(x.dtype).unsqueeze(1)
        col_matrix = bicubic_matrix(cols, width, source_cols).to(x.dtype).unsqueeze(1)
    return row_matrix @ x @ col_matrix.transpose(-1, -2)
