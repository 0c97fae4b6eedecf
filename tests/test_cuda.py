"""The GPU side of the CPU tests: DEGC's k-NN (dense == sparse == brute force), an image
alone vs. padded in a batch, autocast (partition and graph of float32), the sync-free
forward and backward under ``torch.cuda.set_sync_debug_mode('error')``, and the
``embedding_bag`` aggregation against the CPU's, all on a CUDA device.

Marked ``cuda`` and skipped without a GPU; ``tools/gpu_check.py`` runs them (see
docs/gpu.md). ``MMCVIG_TEST_DEVICE=cpu`` runs them on the CPU instead, which checks the
tests themselves on a machine without a GPU (the sync checks then count host syncs with
``HostSyncCounter``, and the aggregation takes ``embedding_bag`` as a GPU does).
"""
import contextlib
import os

import pytest
import torch
import torch.nn.functional as F
from references import brute_force_knn
from test_amp import large_tokens  # tokens of scale 30, as DEGC sees at detection size
from test_deterministic import OpNames

from mmcvig.analysis import HostSyncCounter
from mmcvig.models import ClusterViG
from mmcvig.models.degc import (DEGC, GRAPH_CONVS, Partition, aggregate_neighbors, build_graph,
                                build_graph_sparse, graph_conv, partition)

DEVICE = torch.device(os.environ.get('MMCVIG_TEST_DEVICE', 'cuda'))
ON_CUDA = DEVICE.type == 'cuda'
pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(ON_CUDA and not torch.cuda.is_available(), reason='needs a GPU'),
]
HALF_DTYPES = [torch.float16, torch.bfloat16]
MINI = dict(num_blocks=3, channels=32, num_clusters=3, groups=2, stride=16)
MEAN = torch.tensor([123.675, 116.28, 103.53]).view(3, 1, 1)
STD = torch.tensor([58.395, 57.12, 57.375]).view(3, 1, 1)


@pytest.fixture
def exact():
    """Bit-stable float32 on the GPU: no TF32 in convolutions and matrix products, and
    deterministic kernels (k-means' cluster sums are atomic adds otherwise, whose order,
    hence rounding, changes from run to run and can flip a label at a near tie).
    ``warn_only``: cuBLAS wants ``CUBLAS_WORKSPACE_CONFIG`` for a guarantee it gives in
    practice on one stream."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
             torch.are_deterministic_algorithms_enabled(),
             torch.is_deterministic_algorithms_warn_only_enabled())
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    torch.use_deterministic_algorithms(True, warn_only=True)
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved[:2]
    torch.use_deterministic_algorithms(saved[2], warn_only=saved[3])


def to_device(pair):
    """A Partition or Graph (named tuples of tensors) on DEVICE."""
    return type(pair)(*(t.to(DEVICE) if isinstance(t, torch.Tensor) else t for t in pair))


def skewed_labels(gen, num_tokens=50, num_clusters=5):
    """Three images: a dominant cluster, an empty cluster, a tiny one and padding (label
    ``num_clusters``)."""
    labels = torch.randint(0, num_clusters, (3, num_tokens), generator=gen)
    labels[0, :45] = 0
    labels[1] = torch.where(labels[1] == 2, 3, labels[1])
    labels[2, :3] = 4
    labels[2, 3:] = torch.where(labels[2, 3:] == 4, 0, labels[2, 3:])
    labels[2, -12:] = num_clusters
    return labels


def make_partition(labels, num_clusters):
    labels = torch.as_tensor(labels)
    return Partition(labels, F.one_hot(labels, num_clusters + 1)[..., :-1].sum(1))


def neighbour_similarities(x, labels, neighbours, padding):
    """Per token, the sorted float64 cosine similarities of its neighbour set (on the
    CPU); neighbours outside the token's cluster are an error. Comparing similarities
    rather than indices accepts either of two tokens tied within float32 rounding."""
    feats = F.normalize(x.double(), dim=-1)
    out = {}
    for (b, n), nbrs in neighbours.items():
        nbrs = sorted(nbrs)
        assert labels[b, n] == padding or (labels[b, nbrs] == labels[b, n]).all(), (b, n)
        out[b, n] = torch.sort(feats[b, nbrs] @ feats[b, n]).values
    return out


def dense_sets(graph):
    neighbors, valid = graph.neighbors.cpu(), graph.valid.cpu()
    return {(b, n): set(neighbors[b, n][valid[b, n]].tolist())
            for b in range(neighbors.shape[0]) for n in range(neighbors.shape[1])}


def sparse_sets(arranged, edge_index, batch, num_tokens):
    order, out = arranged.order.cpu(), {}
    for b in range(batch):
        for n in range(num_tokens):
            out[b, n] = set()
    for src, dst in edge_index.cpu().t().tolist():
        s, d = order[src].item(), order[dst].item()
        out[d // num_tokens, d % num_tokens].add(s % num_tokens)
    return out


def assert_same_neighbours(got, expected, x, labels, padding):
    assert got.keys() == expected.keys()
    sims_got = neighbour_similarities(x, labels, got, padding)
    sims_expected = neighbour_similarities(x, labels, expected, padding)
    for key in expected:
        assert len(got[key]) == len(expected[key]), key
        torch.testing.assert_close(sims_got[key], sims_expected[key], rtol=0, atol=1e-6)


# ---------------------------------------------------------------------- k-NN graphs
@pytest.mark.parametrize('num_tokens,k', [(50, 6), (400, 9)])
def test_dense_sparse_and_brute_force_knn_agree(exact, num_tokens, k):
    """Both dense searches and the sparse one on the device give the brute-force
    neighbours (float64, on the CPU), with uneven and empty clusters and padding."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, num_tokens, 16, generator=gen)
    labels = skewed_labels(gen, num_tokens)
    part = make_partition(labels, 5)
    expected = brute_force_knn(x.double(), labels, k, padding=5)
    x_dev, part_dev = x.to(DEVICE), to_device(part)
    for method in ('masked', 'segments'):
        graph = build_graph(x_dev, part_dev, k, method=method)
        assert graph.neighbors.device.type == DEVICE.type
        assert torch.equal(graph.neighbors[..., 0].cpu(), torch.arange(num_tokens).expand(3, -1))
        assert_same_neighbours(dense_sets(graph), expected, x, labels, 5)
    arranged, edge_index = build_graph_sparse(x_dev, part_dev, k)
    assert_same_neighbours(sparse_sets(arranged, edge_index, 3, num_tokens), expected, x,
                           labels, 5)


def blob_tokens(batch, num_tokens, channels, seed=0):
    """Tokens around 4 well-separated centres per image: k-means finds the same clusters
    whatever the device's rounding."""
    gen = torch.Generator().manual_seed(seed)
    centres = 8 * torch.randn(batch, 4, channels, generator=gen)
    member = torch.randint(0, 4, (batch, num_tokens), generator=gen)
    return centres.gather(1, member.unsqueeze(-1).expand(-1, -1, channels)) + \
        torch.randn(batch, num_tokens, channels, generator=gen)


@pytest.mark.parametrize('conv', sorted(GRAPH_CONVS))
def test_degc_dense_and_sparse_on_device_equal_cpu(exact, conv):
    """DEGC with the same weights: dense and sparse paths on the device, and the dense
    path on the CPU, give the same output and partition, on a padded batch."""
    torch.manual_seed(0)
    dense = DEGC(16, num_clusters=4, k=7, graph_conv=conv, groups=2).eval()
    sparse = DEGC(16, num_clusters=4, k=7, graph_conv=conv, groups=2,
                  graph_impl='sparse').eval()
    sparse.load_state_dict(dense.state_dict())
    x = blob_tokens(2, 63, 16).transpose(1, 2).reshape(2, 16, 7, 9).contiguous()
    valid = torch.ones(2, 7, 9, dtype=torch.bool)
    valid[0, 5:] = valid[0, :, 6:] = False
    valid = valid.flatten(1)
    with torch.no_grad():
        ref, ref_inter = dense(x, valid, return_intermediates=True)
        dense.to(DEVICE), sparse.to(DEVICE)
        out, inter = dense(x.to(DEVICE), valid.to(DEVICE), return_intermediates=True)
        out_sparse, inter_sparse = sparse(x.to(DEVICE), valid.to(DEVICE),
                                          return_intermediates=True)
    assert torch.equal(inter.partition.labels.cpu(), ref_inter.partition.labels)
    assert torch.equal(inter_sparse.partition.labels.cpu(), ref_inter.partition.labels)
    own = valid.unsqueeze(1).expand_as(ref.flatten(2))
    torch.testing.assert_close(out.flatten(2).cpu()[own], ref.flatten(2)[own], rtol=1e-4,
                               atol=1e-5)
    torch.testing.assert_close(out_sparse.flatten(2).cpu()[own], ref.flatten(2)[own],
                               rtol=1e-4, atol=1e-5)


# -------------------------------------------------------------------------- padding
def preprocess(images, divisor=32):
    """What mmdet's DetDataPreprocessor does (without importing mmdet.models, which
    needs mmcv's compiled ops): BGR to RGB, normalise, pad bottom-right with zeros to
    the largest image, rounded up to ``divisor``."""
    height = -(-max(i.shape[1] for i in images) // divisor) * divisor
    width = -(-max(i.shape[2] for i in images) // divisor) * divisor
    batch = torch.zeros(len(images), 3, height, width)
    for b, image in enumerate(images):
        batch[b, :, :image.shape[1], :image.shape[2]] = (image.flip(0).float() - MEAN) / STD
    return batch


def random_images(gen, *sizes):
    return [torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=gen)
            for h, w in sizes]


@pytest.fixture(scope='module')
def padded_model():
    torch.manual_seed(0)
    return ClusterViG(MINI, img_size=128, pad_aware=True, pyramid=dict()).eval()


@pytest.mark.parametrize('own,mate', [((77, 130), (160, 192)), ((130, 77), (192, 160)),
                                      ((201, 95), (96, 256)), ((600, 901), (800, 1333))])
def test_features_and_partitions_equal_alone_and_padded(exact, padded_model, own, mate):
    """tests/test_padding.py on the device (sync-free there): an image's features over
    its own extent, alone vs. padded beside a larger image, within 1e-4 relative at every
    pyramid level, and the same partition of its tokens in every block."""
    model = padded_model.to(DEVICE)
    image, other = random_images(torch.Generator().manual_seed(sum(own)), own, mate)
    alone_in, padded_in = preprocess([image]).to(DEVICE), preprocess([image, other]).to(DEVICE)
    with torch.no_grad():
        alone, alone_blocks = model(alone_in, return_intermediates=True)
        padded, padded_blocks = model(padded_in, return_intermediates=True)
    for stride, a, p in zip((4, 8, 16, 32), alone, padded):
        rows, cols = -(-own[0] // stride), -(-own[1] // stride)
        a, p = a[0, :, :rows, :cols], p[0, :, :rows, :cols]
        assert float((p - a).norm() / a.norm()) < 1e-4, stride
    rows, cols = -(-own[0] // 16), -(-own[1] // 16)
    grid_alone, grid_padded = alone_in.shape[-1] // 16, padded_in.shape[-1] // 16
    for block_alone, block_padded in zip(alone_blocks, padded_blocks):
        labels_a = block_alone.partition.labels[0].view(-1, grid_alone)[:rows, :cols]
        labels_p = block_padded.partition.labels[0].view(-1, grid_padded)[:rows, :cols]
        assert torch.equal(labels_a, labels_p)


# ------------------------------------------------------------------------- autocast
def autocast(dtype):
    return torch.autocast(DEVICE.type, dtype=dtype)


@pytest.mark.parametrize('dtype', HALF_DTYPES)
@pytest.mark.parametrize('num_tokens,channels', [(196, 192), (4200, 320)])
def test_partition_and_graph_exact_under_autocast(exact, dtype, num_tokens, channels):
    tokens = large_tokens(num_tokens, channels).to(DEVICE)
    part = partition(tokens, 4)
    graph = build_graph(tokens, part, 13)
    with autocast(dtype):
        part_amp = partition(tokens, 4)
        graph_amp = build_graph(tokens, part_amp, 13)
        sparse_amp = build_graph_sparse(tokens, part_amp, 9)[1]
    assert torch.equal(part_amp.labels, part.labels)
    assert torch.equal(graph_amp.neighbors, graph.neighbors)
    assert torch.equal(graph_amp.valid, graph.valid)
    assert torch.equal(sparse_amp, build_graph_sparse(tokens, part, 9)[1])


@pytest.mark.parametrize('dtype', HALF_DTYPES)
def test_degc_under_autocast(exact, dtype):
    """The partition and graph are float32's, the output is in the autocast dtype and
    close to float32's."""
    torch.manual_seed(0)
    degc = DEGC(64, num_clusters=4, k=9).eval().to(DEVICE)
    x = large_tokens(196, 64).transpose(1, 2).reshape(2, 64, 14, 14).to(DEVICE)
    with torch.no_grad():
        out, inter = degc(x, return_intermediates=True)
        with autocast(dtype):
            out_amp, inter_amp = degc(x, return_intermediates=True)
    assert torch.equal(inter_amp.partition.labels, inter.partition.labels)
    assert torch.equal(inter_amp.graph.neighbors, inter.graph.neighbors)
    assert out_amp.dtype == dtype
    assert (out_amp.float() - out).norm() / out.norm() < 2e-2


@pytest.mark.parametrize('dtype', HALF_DTYPES)
def test_backbone_finite_under_autocast(exact, dtype):
    """Inputs far from the normalised range (scale 50) make fc1's tokens large: nothing
    overflows (how close to float32 it stays has no fixed bound with random weights, see
    tests/test_amp.py)."""
    torch.manual_seed(0)
    arch = dict(num_blocks=3, channels=64, num_clusters=4, groups=1, stride=16)
    model = ClusterViG(arch, pad_aware=True, pyramid=dict()).eval().to(DEVICE)
    images = 50 * torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad(), autocast(dtype):
        outs = model(images.to(DEVICE))
    assert all(torch.isfinite(out).all() for out in outs)


# ------------------------------------------------------------------------ sync-free
@contextlib.contextmanager
def no_host_sync():
    """On a GPU, CUDA raises on any synchronising call; on the CPU (MMCVIG_TEST_DEVICE),
    the calls that would synchronise are counted."""
    if not ON_CUDA:
        with HostSyncCounter() as syncs:
            yield
        assert syncs.total == 0, syncs.counts
        return
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode('error')
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode('default')


def padded_batch(seed):
    """Two images, the first padded bottom-right as mmdet pads a batch."""
    x = torch.randn(2, 3, 96, 160, generator=torch.Generator().manual_seed(seed))
    x[0, :, 77:] = 0
    x[0, :, :, 130:] = 0
    return x.to(DEVICE)


def sync_free_model(**kwargs):
    """The default on CUDA inputs; forced on the CPU."""
    torch.manual_seed(0)
    sync_free = None if ON_CUDA else True
    return ClusterViG(MINI, pad_aware=True, pyramid=dict(), sync_free=sync_free,
                      **kwargs).to(DEVICE)


@pytest.mark.parametrize('kmeans_tol', [0.0, 1e-3])
def test_sync_free_forward(kmeans_tol):
    model = sync_free_model(kmeans_tol=kmeans_tol).eval()
    x = padded_batch(0)
    with torch.no_grad(), no_host_sync():
        outs = model(x)
    assert all(torch.isfinite(out).all() for out in outs)


@pytest.mark.parametrize('dtype', [None, torch.float16])
def test_sync_free_forward_and_backward(dtype):
    """A training step's forward and backward, in float32 and under float16 autocast."""
    model = sync_free_model().train()
    x = padded_batch(1)
    amp = autocast(dtype) if dtype else contextlib.nullcontext()
    with no_host_sync():
        with amp:
            loss = sum(out.float().mean() for out in model(x))
        loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


# -------------------------------------------------------------------- aggregation
@pytest.mark.parametrize('reduce', ['max', 'sum'])
@pytest.mark.parametrize('batch,channels,num_tokens,k', [(3, 12, 50, 7), (2, 64, 1000, 9)])
def test_embedding_bag_aggregation_equals_cpu(monkeypatch, reduce, batch, channels,
                                              num_tokens, k):
    """The device's aggregation (``embedding_bag``, forward and backward) gives the CPU
    aggregation's values and gradients (``_NeighborMax`` for max)."""
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(batch, channels, num_tokens, generator=gen)
    labels = torch.randint(0, 5, (batch, num_tokens), generator=gen)
    labels[-1, -num_tokens // 5:] = 5  # padding
    graph = build_graph(x.transpose(1, 2), make_partition(labels, 5), k)
    grad = torch.randn(batch, channels, num_tokens, generator=gen)
    x_cpu = x.clone().requires_grad_()
    expected = aggregate_neighbors(x_cpu, graph, reduce)
    (expected * grad).sum().backward()
    if not ON_CUDA:  # what a GPU runs, forced on the CPU
        monkeypatch.setattr(graph_conv, 'NEIGHBOR_MAX_DEVICES', ())
    x_dev = x.to(DEVICE).requires_grad_()
    with OpNames() as ops:
        out = aggregate_neighbors(x_dev, to_device(graph), reduce)
        (out * grad.to(DEVICE)).sum().backward()
    assert 'embedding_bag' in ops.names or '_embedding_bag' in ops.names, ops.names
    assert out.device.type == DEVICE.type
    torch.testing.assert_close(out.cpu(), expected.detach())
    torch.testing.assert_close(x_dev.grad.cpu(), x_cpu.grad)
