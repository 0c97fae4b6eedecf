"""Isotropic-to-pyramid adapter: one stride-s map -> maps at strides s/4, s/2, s, 2s."""
from typing import Optional, Sequence, Tuple

from mmcv.cnn import build_activation_layer, build_norm_layer
from mmengine.model import BaseModule, ModuleList
from torch import Tensor, nn

from ...registry import register_model

SCALES = (4.0, 2.0, 1.0, 0.5)


def _upsample(in_channels: int, times: int, norm_cfg, act_cfg) -> Tuple[nn.Module, int]:
    """``times`` 2x2 stride-2 transposed convs, each halving the channels, with norm and
    activation between them (ViTDet's simple feature pyramid)."""
    layers, channels = [], in_channels
    for i in range(times):
        if i:
            layers += [build_norm_layer(norm_cfg, channels)[1], build_activation_layer(act_cfg)]
        layers.append(nn.ConvTranspose2d(channels, channels // 2, 2, stride=2))
        channels //= 2
    return nn.Sequential(*layers), channels


@register_model
class SimplePyramid(BaseModule):
    """Turns isotropic feature maps into a pyramid a stock ``FPN`` takes unchanged.

    Scale 4 and 2 upsample with 2x2 transposed convolutions (halving the channels each
    time), 1 is the identity and 0.5 a 2x2 max-pool (ceil mode, so odd sizes keep the
    last row). Map ``i`` of the input feeds level ``i``; a single input map feeds all
    levels (ViTDet's design).

    Args:
        in_channels (int): channels :math:`C` of the isotropic maps.
        scales (Sequence[float]): resampling of every level, from {4, 2, 1, 0.5}.
        norm_cfg (dict), act_cfg (dict): between stacked transposed convolutions.

    Attributes:
        out_channels (list[int]): channels of every level (``C/4, C/2, C, C`` by default),
            the ``in_channels`` of the FPN that follows.
    """

    def __init__(self, in_channels: int, scales: Sequence[float] = SCALES,
                 norm_cfg=dict(type='BN'), act_cfg=dict(type='GELU'), init_cfg=None):
        super().__init__(init_cfg)
        self.scales = tuple(float(s) for s in scales)
        unknown = [s for s in self.scales if s not in SCALES]
        if unknown or not self.scales:
            raise ValueError(f'Unknown pyramid scales {unknown or list(scales)}; each must be '
                             f'one of {SCALES}')
        self.levels, self.out_channels = ModuleList(), []
        for scale in self.scales:
            if scale >= 2:
                level, channels = _upsample(in_channels, int(scale).bit_length() - 1, norm_cfg,
                                            act_cfg)
            elif scale == 1:
                level, channels = nn.Identity(), in_channels
            else:
                level, channels = nn.MaxPool2d(2, stride=2, ceil_mode=True), in_channels
            self.levels.append(level)
            self.out_channels.append(channels)

    def forward(self, inputs: Sequence[Tensor], mask: Optional[Tensor] = None) -> Tuple[Tensor]:
        """
        Args:
            inputs (Sequence[Tensor]): one or ``len(scales)`` maps :math:`(B, C, H, W)`.
            mask (BoolTensor, optional): :math:`(B, 1, H, W)` False over batch padding.
                Every level is then zero outside each image's own part (what a lone
                image's map ends with), and the max-pool never takes a padding value.

        Returns:
            tuple[Tensor]: level ``i`` is :math:`(B, C_i, H \\cdot s_i, W \\cdot s_i)`
            (rounded up for 0.5).
        """
        if len(inputs) not in (1, len(self.levels)):
            raise ValueError(f'SimplePyramid with {len(self.levels)} levels takes 1 or '
                             f'{len(self.levels)} maps, got {len(inputs)}')
        if len(inputs) == 1:
            inputs = list(inputs) * len(self.levels)
        if mask is None:
            return tuple(level(x) for level, x in zip(self.levels, inputs))
        return tuple(
            self._masked_level(level, scale, x, mask)
            for level, scale, x in zip(self.levels, self.scales, inputs))

    @staticmethod
    def _masked_level(level: nn.Module, scale: float, x: Tensor, mask: Tensor) -> Tensor:
        if scale < 1:
            out = level(x.masked_fill(~mask, float('-inf')))
            level_mask = level(mask.to(x.dtype)) > 0
        else:
            out = level(x)
            level_mask = mask.repeat_interleave(int(scale), 2).repeat_interleave(int(scale), 3)
        return out.masked_fill(~level_mask, 0)
