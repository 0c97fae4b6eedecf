"""``torch.use_deterministic_algorithms(True)``: no operator that PyTorch documents as
raising on CUDA in that mode, and the fallbacks equal the default path (issue 18)."""
import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from mmcvig.models import ClusterViG, ClusterViGClsHead
from mmcvig.models.backbones.padding import extent_mask, place_pos_embed
from mmcvig.models.degc import aggregate_neighbors, build_graph, graph_conv, partition
from mmcvig.models.layers import bicubic_resize

# Backward kernels that raise on CUDA in deterministic mode (torch's
# use_deterministic_algorithms docstring): bicubic interpolate, grid_sample, adaptive
# average pooling, embedding_bag with mode='max'.
RAISING_ON_CUDA = ('upsample_bicubic2d_backward', 'grid_sampler_2d_backward',
                   '_adaptive_avg_pool2d_backward', '_embedding_bag_backward',
                   '_embedding_bag_dense_backward', '_embedding_bag_per_sample_weights_backward')


class OpNames(TorchDispatchMode):
    """Names of the aten operators that run, forward and backward."""

    def __init__(self):
        super().__init__()
        self.names = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.add(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


@pytest.fixture
def deterministic():
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(previous)


@pytest.fixture
def embedding_bag_everywhere(monkeypatch):
    """What a GPU runs: the max over neighbours by ``embedding_bag`` outside
    deterministic mode."""
    monkeypatch.setattr(graph_conv, 'NEIGHBOR_MAX_DEVICES', ())


def training_step(model, head, images):
    feats = model(images)
    loss = head(feats[-1:]).logsumexp(1).mean() + sum(f.square().mean() for f in feats)
    loss.backward()


@pytest.mark.parametrize('pad_aware', [False, True])
def test_training_step_avoids_ops_that_raise_on_cuda(deterministic, embedding_bag_everywhere,
                                                     pad_aware):
    torch.manual_seed(0)
    arch = dict(num_blocks=2, channels=32, num_clusters=4, groups=1, stride=16)
    model = ClusterViG(arch, pad_aware=pad_aware, pyramid=dict()).train()
    head = ClusterViGClsHead(num_classes=5, in_channels=32, hidden_channels=16).train()
    images = torch.randn(2, 3, 96, 112)  # not the 224 pos_embed grid: it is resized
    images[1, :, 64:] = 0  # padding, seen with pad_aware
    with OpNames() as ops:
        training_step(model, head, images)
    assert not ops.names & set(RAISING_ON_CUDA), ops.names & set(RAISING_ON_CUDA)
    assert 'scatter_add_' in ops.names or 'scatter_add' in ops.names  # _NeighborMax ran


def test_default_mode_takes_the_gpu_path(embedding_bag_everywhere):
    """The test above can fail: outside deterministic mode the same step runs ops of
    that list."""
    torch.manual_seed(0)
    arch = dict(num_blocks=2, channels=32, num_clusters=4, groups=1, stride=16)
    model = ClusterViG(arch).train()
    head = ClusterViGClsHead(num_classes=5, in_channels=32, hidden_channels=16).train()
    with OpNames() as ops:
        training_step(model, head, torch.randn(2, 3, 96, 112))
    assert ops.names & set(RAISING_ON_CUDA)


def test_bicubic_resize_equals_interpolate():
    gen = torch.Generator().manual_seed(0)
    source = torch.randn(1, 6, 14, 14, generator=gen, dtype=torch.float64, requires_grad=True)
    for height, width in [(7, 9), (50, 84), (14, 14), (3, 30)]:
        size = torch.ones(1, dtype=torch.float64)
        mine = bicubic_resize(source, size * height, size * width, height, width)
        theirs = F.interpolate(source, size=(height, width), mode='bicubic',
                               align_corners=False)
        torch.testing.assert_close(mine, theirs)
        grad = torch.randn(theirs.shape, generator=gen, dtype=torch.float64)
        torch.testing.assert_close(torch.autograd.grad(mine, source, grad)[0],
                                   torch.autograd.grad(theirs, source, grad)[0])


def test_deterministic_pos_embed_equals_default(deterministic):
    gen = torch.Generator().manual_seed(1)
    pos = torch.randn(1, 8, 14, 14, generator=gen)
    extent = torch.tensor([[80, 112], [128, 96]])
    mask = extent_mask(extent, 16, 8, 7)
    placed = place_pos_embed(pos, mask)
    torch.use_deterministic_algorithms(False)
    torch.testing.assert_close(placed, place_pos_embed(pos, mask), rtol=1e-5, atol=1e-5)


def test_neighbor_max_in_deterministic_mode_equals_embedding_bag(embedding_bag_everywhere):
    """The aggregation a GPU takes (``embedding_bag``), forced on the CPU, equals
    ``_NeighborMax`` (the CPU's and deterministic mode's) in forward and backward."""
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(2, 16, 60, generator=gen)
    tokens = x.transpose(1, 2)
    graph = build_graph(tokens, partition(tokens, 4), 7)
    grad = torch.randn(2, 16, 60, generator=gen)
    results = []
    for deterministic_mode in (False, True):
        torch.use_deterministic_algorithms(deterministic_mode)
        try:
            x_in = x.clone().requires_grad_()
            out = aggregate_neighbors(x_in, graph, 'max')
            (out * grad).sum().backward()
        finally:
            torch.use_deterministic_algorithms(False)
        results.append((out, x_in.grad))
    (bag, bag_grad), (neighbor_max, neighbor_max_grad) = results
    torch.testing.assert_close(neighbor_max, bag)
    torch.testing.assert_close(neighbor_max_grad, bag_grad)
