"""Batch padding: an image's features, partition and graph do not depend on its batch
mates (ClusterViG ``pad_aware``), with mmdet's stock ``DetDataPreprocessor``."""
import pytest
import torch
from mmdet.models.data_preprocessors import DetDataPreprocessor

from mmcvig.models import ClusterViG
from mmcvig.models.backbones.padding import extent_mask, image_extent, place_pos_embed

MINI = dict(num_blocks=3, channels=32, num_clusters=3, groups=2, stride=16)
MEAN, STD = [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]
# (own image, larger batch mate): odd sizes, both orientations, one mate wider and taller.
# The last pair is detection-sized: 2,166 own tokens (the per-cluster k-NN) and k-means
# that rarely converges in its 20 iterations, where float noise would flip labels.
SIZES = [((77, 130), (160, 192)), ((130, 77), (192, 160)), ((201, 95), (96, 256)),
         ((64, 64), (250, 251)), ((600, 901), (800, 1333))]


def preprocess(images, divisor=32):
    """mmdet's own preprocessing: normalise, pad bottom-right to the largest image and a
    multiple of ``divisor`` with zeros."""
    prep = DetDataPreprocessor(mean=MEAN, std=STD, bgr_to_rgb=True, pad_size_divisor=divisor)
    return prep(dict(inputs=images), training=False)['inputs']


def random_images(gen, *sizes):
    return [torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=gen)
            for h, w in sizes]


def relative_error(a, b):
    return float((a - b).norm() / b.norm())


@pytest.fixture(scope='module')
def model():
    torch.manual_seed(0)
    return ClusterViG(MINI, img_size=128, pad_aware=True, pyramid=dict()).eval()


def own_part(feature, h, w, stride):
    """The part of a ``(C, H', W')`` map that covers an ``h x w`` image."""
    return feature[:, :-(-h // stride), :-(-w // stride)]


@pytest.mark.parametrize('own,mate', SIZES)
def test_features_equal_alone_and_padded(model, own, mate):
    """The issue's measure: features of an image over its own extent, alone vs. padded
    in a batch with a larger image (1e-4 relative), at every pyramid level."""
    gen = torch.Generator().manual_seed(sum(own))
    image, other = random_images(gen, own, mate)
    with torch.no_grad():
        alone = model(preprocess([image]))
        padded = model(preprocess([image, other]))
        exact = model(preprocess([image], divisor=1))  # no padding at all
    for stride, a, p, e in zip((4, 8, 16, 32), alone, padded, exact):
        a, p, e = (own_part(t[0], *own, stride) for t in (a, p, e))
        assert relative_error(p, a) < 1e-4, stride
        assert relative_error(e, a) < 1e-4, stride


@pytest.mark.parametrize('own,mate', SIZES[:2] + SIZES[-1:])
def test_partition_and_graph_equal_alone_and_padded(model, own, mate):
    gen = torch.Generator().manual_seed(7)
    image, other = random_images(gen, own, mate)
    with torch.no_grad():
        _, alone = model(preprocess([image]), return_intermediates=True)
        _, padded = model(preprocess([image, other]), return_intermediates=True)
    rows, cols = (-(-s // 16) for s in own)
    shape_alone = _token_grid(preprocess([image]), 16)
    shape_padded = _token_grid(preprocess([image, other]), 16)
    for block_alone, block_padded in zip(alone, padded):
        part_a, part_p = block_alone.partition, block_padded.partition
        grid_a = part_a.labels[0].view(shape_alone)
        grid_p = part_p.labels[0].view(shape_padded)
        assert torch.equal(grid_a[:rows, :cols], grid_p[:rows, :cols])
        assert torch.equal(part_a.counts[0], part_p.counts[0])
        outside = torch.ones_like(grid_p, dtype=torch.bool)
        outside[:rows, :cols] = False
        assert (grid_p[outside] == part_p.counts.shape[1]).all()  # label kappa: no cluster
        assert _neighbour_sets(block_alone.graph, shape_alone[1], rows, cols) == \
            _neighbour_sets(block_padded.graph, shape_padded[1], rows, cols)


def _token_grid(batch, stride):
    return tuple(-(-s // stride) for s in batch.shape[-2:])


def _neighbour_sets(graph, width, rows, cols):
    """Valid neighbours of image 0's own tokens, as (row, col) pairs."""
    out = {}
    for r in range(rows):
        for c in range(cols):
            slots = graph.neighbors[0, r * width + c][graph.valid[0, r * width + c]]
            out[r, c] = {(int(n) // width, int(n) % width) for n in slots}
    return out


def test_classification_unchanged_without_pad_aware():
    """pad_aware is off by default: classification batches see the plain resize."""
    torch.manual_seed(0)
    plain = ClusterViG(MINI, img_size=128).eval()
    aware = ClusterViG(MINI, img_size=128, pad_aware=True).eval()
    aware.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 96, 160)
    with torch.no_grad():
        torch.testing.assert_close(plain(x)[0], aware(x)[0])


def test_image_extent_and_masks():
    x = torch.zeros(3, 3, 40, 50)
    x[0, :, :33, :17] = 1.0
    x[1, 2, 39, 49] = -0.5  # only the last pixel of one channel is non-zero
    extent = image_extent(x)
    assert extent.tolist() == [[33, 17], [40, 50], [40, 50]]  # image 2 all zero: unpadded
    mask = extent_mask(extent, 16, 3, 4)
    assert mask.shape == (3, 1, 3, 4)
    assert mask[0, 0].sum(0).tolist() == [3, 3, 0, 0]  # ceil(33 / 16) rows
    assert mask[0, 0].sum(1).tolist() == [2, 2, 2]  # ceil(17 / 16) columns
    assert mask[1].all()


def test_placed_pos_embed_equals_per_image_interpolation():
    pos = torch.randn(1, 8, 8, 8)
    extent = torch.tensor([[5, 9], [11, 3]])
    mask = extent_mask(extent, 1, 12, 10)
    placed = place_pos_embed(pos, mask)
    for i, (h, w) in enumerate(extent.tolist()):
        ref = torch.nn.functional.interpolate(pos, size=(h, w), mode='bicubic',
                                              align_corners=False)[0]
        torch.testing.assert_close(placed[i, :, :h, :w], ref, rtol=1e-5, atol=1e-5)
        assert not placed[i, :, h:].any() and not placed[i, :, :, w:].any()
