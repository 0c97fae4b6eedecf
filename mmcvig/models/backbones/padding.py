"""Batch padding, found in the padded batch tensor alone.

mmdet's ``DetDataPreprocessor`` normalises every image, then pads the batch at the bottom
and right with ``pad_value`` 0 to its largest image (and a multiple of
``pad_size_divisor``). A normalised real pixel is exactly 0 in all three channels only
when it equals the mean in every channel; with mmdet's ImageNet mean (123.675, 116.28,
103.53) no 8-bit pixel does. So an image's extent is its last row and last column that
hold a non-zero value. Limits: a real border that is exactly zero after normalisation
(e.g. black edges with mean 0) counts as padding, and an image that is zero everywhere
counts as unpadded.

Everything here works on tensors, with static shapes and no host read.
"""
import torch
import torch.nn.functional as F
from torch import Tensor

from ..layers import bicubic_resize


def _last_nonzero(any_nonzero: Tensor) -> Tensor:
    """:math:`(B,)` one past the last True of each row of :math:`(B, L)`; ``L`` if none."""
    length = any_nonzero.shape[1]
    position = torch.arange(1, length + 1, device=any_nonzero.device)
    last = (any_nonzero * position).amax(1)
    return torch.where(last > 0, last, length)


def image_extent(x: Tensor) -> Tensor:
    """Height and width of every image of a bottom-right zero-padded batch.

    Args:
        x (Tensor): :math:`(B, 3, H, W)` normalised images.

    Returns:
        LongTensor: :math:`(B, 2)` ``(h, w)`` of every image.
    """
    nonzero = x.ne(0).any(1)  # (B, H, W)
    return torch.stack([_last_nonzero(nonzero.any(2)), _last_nonzero(nonzero.any(1))], 1)


def extent_mask(extent: Tensor, stride: int, height: int, width: int) -> Tensor:
    """:math:`(B, 1, H', W')` True over each image's own part of a stride-``stride`` map.

    A stride-2 convolution (kernel 3, padding 1) maps ``h`` rows to ``ceil(h / 2)``, so
    an image's own part at stride ``s`` is ``ceil(h / s)`` rows (ceil divisions compose).
    """
    rows, cols = (-(-extent // stride)).unbind(1)
    keep_rows = torch.arange(height, device=extent.device) < rows.view(-1, 1)
    keep_cols = torch.arange(width, device=extent.device) < cols.view(-1, 1)
    return (keep_rows.unsqueeze(2) & keep_cols.unsqueeze(1)).unsqueeze(1)


def place_pos_embed(pos_embed: Tensor, mask: Tensor) -> Tensor:
    """``pos_embed`` resized, for every image, to the grid of its own tokens (bicubic,
    as ``F.interpolate(..., align_corners=False)`` would for that image alone) and zero
    over the padding.

    ``grid_sample`` does the per-image resize in one call with static shapes: output
    token ``j`` of an image ``w`` tokens wide samples normalised coordinate
    ``(2j + 1) / w - 1``, the source position ``F.interpolate`` uses; ``border``
    padding repeats the edge values as ``F.interpolate`` clamps its taps.
    Under ``torch.use_deterministic_algorithms(True)`` the same resize is two matrix
    products (:func:`~mmcvig.models.layers.bicubic_resize`).

    Args:
        pos_embed (Tensor): :math:`(1, C, H_0, W_0)`.
        mask (BoolTensor): :math:`(B, 1, H, W)` from :func:`extent_mask` at the token
            stride.

    Returns:
        Tensor: :math:`(B, C, H, W)`.
    """
    batch, _, height, width = mask.shape
    rows = mask[:, 0, :, 0].sum(1, keepdim=True).to(pos_embed.dtype)  # (B, 1)
    cols = mask[:, 0, 0, :].sum(1, keepdim=True).to(pos_embed.dtype)
    if torch.are_deterministic_algorithms_enabled():  # grid_sample's backward would raise
        return bicubic_resize(pos_embed, rows, cols, height, width)
    ys = (2 * torch.arange(height, device=mask.device) + 1) / rows - 1  # (B, H)
    xs = (2 * torch.arange(width, device=mask.device) + 1) / cols - 1  # (B, W)
    grid = torch.stack([xs.unsqueeze(1).expand(-1, height, -1),
                        ys.unsqueeze(2).expand(-1, -1, width)], dim=-1)
    resized = F.grid_sample(pos_embed.expand(batch, -1, -1, -1), grid, mode='bicubic',
                            padding_mode='border', align_corners=False)
    return resized * mask
