"""Isotropic-to-pyramid adapter: strides and channels a stock FPN accepts."""
import math

import pytest
import torch
from mmdet.models.necks import FPN

from mmcvig.models import ClusterViG, SimplePyramid

MINI = dict(num_blocks=4, channels=32, num_clusters=2, groups=1, stride=16)


@pytest.mark.parametrize('out_indices', [(3, ), (0, 1, 2, 3)])
@pytest.mark.parametrize('size', [(64, 64), (125, 130), (97, 211)])
def test_levels_strides_and_channels(out_indices, size):
    model = ClusterViG(MINI, out_indices=out_indices, pyramid=dict()).eval()
    assert model.out_channels == [8, 16, 32, 32]
    with torch.no_grad():
        outs = model(torch.randn(1, 3, *size))
    iso = [math.ceil(s / 16) for s in size]
    expected = [[4 * s for s in iso], [2 * s for s in iso], iso, [math.ceil(s / 2) for s in iso]]
    for out, channels, hw in zip(outs, model.out_channels, expected):
        assert out.shape == (1, channels, *hw)
    fpn = FPN(in_channels=model.out_channels, out_channels=16, num_outs=5).eval()
    assert len(fpn(outs)) == 5


def test_custom_scales_and_mismatch_errors():
    model = ClusterViG(MINI, out_indices=(1, 3), pyramid=dict(scales=(2, 0.5)))
    assert model.out_channels == [16, 32]
    with pytest.raises(ValueError, match='one per pyramid level'):
        ClusterViG(MINI, out_indices=(1, 2, 3), pyramid=dict())
    with pytest.raises(ValueError, match='scales'):
        SimplePyramid(32, scales=(3, ))
    with pytest.raises(ValueError, match='takes 1 or 4'):
        SimplePyramid(32)([torch.zeros(1, 32, 2, 2)] * 2)


def test_no_adapter_weights_by_default():
    model = ClusterViG(MINI)
    assert model.pyramid is None
    assert not any(k.startswith('pyramid') for k in model.state_dict())


def test_paper_rule_counts_transposed_convs():
    from mmcvig.analysis import count_conv_macs
    pyramid = SimplePyramid(32, scales=(2, ))
    # One 2x2 stride-2 transposed conv, 32 -> 16 channels, on a 5x7 map.
    assert count_conv_macs(pyramid, ([torch.zeros(1, 32, 5, 7)], )) == 5 * 7 * 32 * 16 * 4
