"""DEGC's four steps against references: brute force, mmpretrain's ViG k-NN, PyG."""
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from mmpretrain.models.backbones.vig import DenseDilatedKnnGraph
from references import brute_force_knn
from torch_geometric.nn import GATv2Conv

from mmcvig.models.degc import (DEGC, GRAPH_CONVS, GlobalUpdate, Partition, TokenCentroids,
                                aggregate_neighbors, build_graph, build_graph_sparse,
                                build_local_update, cluster_means, gather_neighbors, graph_conv,
                                knn_graph, partition)
from mmcvig.models.degc.execution import resolve_sync_free

METHODS = ('masked', 'segments')


def make_partition(labels, num_clusters=None):
    """A Partition from explicit labels (B, N); kappa = 1 + max label unless given, and
    then label kappa marks padding."""
    labels = torch.as_tensor(labels)
    num_clusters = num_clusters or int(labels.max()) + 1
    return Partition(labels, F.one_hot(labels, num_clusters + 1)[..., :-1].sum(1))


def skewed_labels(gen, num_tokens=50, num_clusters=5):
    """Three images: a dominant cluster, an empty cluster, a tiny cluster and padding."""
    labels = torch.randint(0, num_clusters, (3, num_tokens), generator=gen)
    labels[0, :45] = 0  # one dominant cluster
    labels[1] = torch.where(labels[1] == 2, 3, labels[1])  # cluster 2 empty
    labels[2, :3] = 4  # ensure a tiny cluster
    labels[2, 3:] = torch.where(labels[2, 3:] == 4, 0, labels[2, 3:])
    labels[2, -12:] = num_clusters  # padding
    return labels


def neighbor_sets(graph):
    """{(b, n): set of valid neighbours}."""
    out = {}
    for b in range(graph.neighbors.shape[0]):
        for n in range(graph.neighbors.shape[1]):
            out[b, n] = set(graph.neighbors[b, n][graph.valid[b, n]].tolist())
    return out


# ------------------------------------------------------------------------ partition
class TestPartition:

    def test_shapes_no_grad_and_counts(self):
        x = torch.randn(3, 50, 8, requires_grad=True)
        part = partition(x, 4)
        assert part.labels.shape == (3, 50) and part.counts.shape == (3, 4)
        assert not part.labels.requires_grad
        assert torch.equal(part.counts.sum(1), torch.full((3, ), 50))
        assert part.labels.min() >= 0 and part.labels.max() < 4

    def test_recovers_separated_blobs(self):
        gen = torch.Generator().manual_seed(0)
        centres = torch.randn(3, 16, generator=gen) * 10
        truth = torch.arange(60) % 3
        x = (centres[truth] + 0.1 * torch.randn(60, 16, generator=gen)).unsqueeze(0)
        labels = partition(x, 3).labels[0]
        # Same grouping up to a renaming of the clusters.
        for c in range(3):
            assert labels[truth == c].unique().numel() == 1
        assert labels.unique().numel() == 3

    def test_batch_independence(self):
        x = torch.randn(4, 64, 16)
        x[2] = 0  # a degenerate image must not disturb the others either
        together = partition(x, 4).labels
        for i in range(4):
            assert torch.equal(partition(x[i:i + 1], 4).labels[0], together[i])

    def test_random_init_differs_by_seed(self):
        x = torch.randn(1, 200, 4)
        labels = set()
        for seed in range(5):
            torch.manual_seed(seed)
            labels.add(tuple(partition(x, 6, init='random', max_iters=1).labels[0].tolist()))
        assert len(labels) > 1

    def test_deterministic_grid(self):
        x = torch.randn(2, 100, 8)
        assert torch.equal(partition(x, 5).labels, partition(x, 5).labels)

    def test_early_stop_matches_full_iterations(self):
        x = torch.randn(2, 120, 8)
        assert torch.equal(partition(x, 4, tol=0.0).labels, partition(x, 4, tol=None).labels)

    def test_more_clusters_than_tokens_and_constant_input(self):
        part = partition(torch.randn(2, 3, 8), 6)
        assert part.counts.shape == (2, 6) and (part.counts[:, 3:] == 0).all()
        const = partition(torch.ones(1, 40, 8), 4)
        assert const.counts.sum() == 40  # degenerate, but every token is assigned

    def test_fp32_under_bf16_input(self):
        """bfloat16 tokens are clustered in float32: at scale 100, bfloat16 distances
        (8 bits) would give other labels."""
        x = (100 + torch.randn(2, 64, 8, generator=torch.Generator().manual_seed(0)))
        x = x.bfloat16()
        assert torch.equal(partition(x, 4).labels, partition(x.float(), 4).labels)

    def test_unknown_init(self):
        with pytest.raises(ValueError, match='grid'):
            partition(torch.randn(1, 8, 4), 2, init='kmeans++')

    @pytest.mark.parametrize('init', ['grid', 'random'])
    def test_padding_takes_no_part(self, init):
        """An image's tokens get the same labels alone and with padding appended or
        interleaved; padding tokens get label kappa and count nowhere."""
        gen = torch.Generator().manual_seed(2)
        x = torch.randn(1, 60, 8, generator=gen)
        padded = torch.randn(2, 100, 8, generator=gen)
        own = torch.zeros(2, 100, dtype=torch.bool)
        own[0, torch.randperm(100, generator=gen)[:60].sort().values] = True
        own[1, :80] = True
        padded[0, own[0]] = x[0]
        torch.manual_seed(0)
        alone = partition(x, 4, init=init)
        torch.manual_seed(0)
        part = partition(padded, 4, init=init, valid=own)
        if init == 'grid':  # random draws differ with the token count
            assert torch.equal(part.labels[0, own[0]], alone.labels[0])
            assert torch.equal(part.counts[0], alone.counts[0])
        assert (part.labels[~own] == 4).all() and (part.labels[own] < 4).all()
        assert part.counts.sum(1).tolist() == [60, 80]

    @pytest.mark.parametrize('tol', [0.0, 1e-2, None])
    def test_sync_free_matches_early_stop(self, tol):
        gen = torch.Generator().manual_seed(4)
        x = torch.randn(3, 120, 8, generator=gen)
        valid = torch.ones(3, 120, dtype=torch.bool)
        valid[1, 90:] = False
        eager = partition(x, 5, tol=tol, valid=valid)
        free = partition(x, 5, tol=tol, valid=valid, sync_free=True)
        assert torch.equal(eager.labels, free.labels)
        assert torch.equal(eager.counts, free.counts)
        assert int(eager.iters) == int(free.iters) <= 20

    def test_tolerance_stops_each_image_on_its_own(self):
        gen = torch.Generator().manual_seed(5)
        x = torch.randn(4, 80, 8, generator=gen)
        together = partition(x, 4, tol=1e-3).labels
        for i in range(4):
            assert torch.equal(partition(x[i:i + 1], 4, tol=1e-3).labels[0], together[i])


# ---------------------------------------------------------------------- build_graph
class TestBuildGraph:

    def test_one_cluster_equals_vig_knn(self):
        """With one partition, DEGC's graph is ViG's global k-NN (mmpretrain)."""
        x = torch.randn(2, 64, 16)
        graph = build_graph(x, make_partition(torch.zeros(2, 64, dtype=torch.long)), k=9)
        vig = DenseDilatedKnnGraph(k=9)(x.transpose(1, 2).unsqueeze(-1))  # (2, B, N, k)
        for b in range(2):
            for n in range(64):
                assert set(graph.neighbors[b, n].tolist()) == set(vig[0, b, n].tolist())
        assert graph.valid.all()
        assert torch.equal(graph.neighbors[..., 0], torch.arange(64).expand(2, -1))

    @pytest.mark.parametrize('method', METHODS)
    def test_uneven_partitions_match_brute_force(self, method):
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(3, 50, 8, generator=gen)
        labels = skewed_labels(gen)
        part = make_partition(labels, 5)
        graph = build_graph(x, part, k=6, method=method)
        assert graph.neighbors.shape == (3, 50, 6)
        ref = brute_force_knn(x, labels, 6, padding=5)
        got = neighbor_sets(graph)
        assert got == ref
        for (b, n), nbrs in got.items():
            assert (labels[b, list(nbrs)] == labels[b, n]).all()
        # Small clusters and padding: invalid slots point at the token itself.
        small = ~graph.valid
        assert small.any()
        self_idx = torch.arange(50).view(1, -1, 1).expand_as(graph.neighbors)
        assert torch.equal(graph.neighbors[small], self_idx[small])

    def test_methods_agree_with_ties_and_blocks(self, monkeypatch):
        """Masked and per-cluster searches agree with duplicated tokens (ties: any of
        the tied tokens is a right answer, so the neighbours' similarities must match)
        and with the similarity cut into row blocks (then slot for slot)."""
        gen = torch.Generator().manual_seed(1)
        x = torch.randn(2, 90, 8, generator=gen)
        x[:, 40:60] = x[:, :1]  # 20 exact duplicates of token 0
        labels = skewed_labels(gen, num_tokens=90, num_clusters=5)[1:]
        labels[:, 40:60] = labels[:, :1]
        part = make_partition(labels, 5)
        masked = build_graph(x, part, k=9, method='masked')
        segments = build_graph(x, part, k=9, method='segments')
        assert torch.equal(masked.valid, segments.valid)
        assert torch.equal(masked.neighbors[..., 0], segments.neighbors[..., 0])
        feats = F.normalize(x, dim=-1)
        own = feats.unsqueeze(2)
        sims = [(own * feats[torch.arange(2).view(-1, 1, 1), g.neighbors]).sum(-1)
                .masked_fill(~g.valid, -2).sort(-1).values for g in (masked, segments)]
        torch.testing.assert_close(sims[0], sims[1])
        monkeypatch.setattr(knn_graph, '_MAX_BLOCK_ELEMENTS', 7 * 90)
        for method, whole in (('masked', masked), ('segments', segments)):
            blocked = build_graph(x, part, k=9, method=method)
            assert torch.equal(blocked.neighbors, whole.neighbors)
            assert torch.equal(blocked.valid, whole.valid)

    def test_unknown_method(self):
        part = make_partition(torch.zeros(1, 4, dtype=torch.long))
        with pytest.raises(ValueError, match='k-NN method'):
            build_graph(torch.randn(1, 4, 8), part, k=3, method='tiled')

    def test_fewer_tokens_than_k(self):
        x = torch.randn(1, 4, 8)
        graph = build_graph(x, make_partition(torch.zeros(1, 4, dtype=torch.long)), k=9)
        assert graph.neighbors.shape == (1, 4, 9)
        assert graph.valid.sum(-1).tolist() == [[4, 4, 4, 4]]

    @pytest.mark.parametrize('padded', [False, True])
    def test_sparse_graph_equals_dense(self, padded):
        gen = torch.Generator().manual_seed(3)
        x = torch.randn(2, 40, 8, generator=gen)
        labels = torch.randint(0, 4, (2, 40), generator=gen)
        labels[1, labels[1] == 1] = 0
        if padded:
            labels[0, 30:] = 4
        part = make_partition(labels, 4)
        dense = neighbor_sets(build_graph(x, part, k=5))
        arranged, edge_index = build_graph_sparse(x, part, k=5)
        sparse = {key: set() for key in dense}
        for src, dst in edge_index.t().tolist():
            s, d = arranged.order[src].item(), arranged.order[dst].item()
            sparse[d // 40, d % 40].add(s % 40)
        assert sparse == dense
        assert sparse == brute_force_knn(x, labels, 5, padding=4)


# -------------------------------------------------------------------- global_update
def test_global_update_equals_pyg_gatv2():
    torch.manual_seed(0)
    b, kappa, c = 3, 5, 16
    z = torch.randn(b, kappa, c)
    present = torch.ones(b, kappa, dtype=torch.bool)
    present[1, 2] = present[2, 0] = present[2, 4] = False  # empty partitions
    ours = GlobalUpdate(c)
    torch.nn.init.normal_(ours.bias)
    ref = GATv2Conv(c, c, heads=1, negative_slope=0.2, add_self_loops=True,
                    share_weights=False, bias=True)
    with torch.no_grad():
        ref.lin_l.weight.copy_(ours.lin_l.weight)
        ref.lin_l.bias.copy_(ours.lin_l.bias)
        ref.lin_r.weight.copy_(ours.lin_r.weight)
        ref.lin_r.bias.copy_(ours.lin_r.bias)
        ref.att.copy_(ours.att.view(1, 1, c))
        ref.bias.copy_(ours.bias)
    out = ours(z, present)
    for i in range(b):
        nodes = present[i].nonzero().flatten()
        m = len(nodes)
        # Complete directed graph over the present centroids (GATv2Conv adds self loops).
        src, dst = torch.meshgrid(torch.arange(m), torch.arange(m), indexing='ij')
        keep = src != dst
        edge_index = torch.stack([src[keep], dst[keep]])
        expected = ref(z[i, nodes], edge_index)
        torch.testing.assert_close(out[i, nodes], expected, rtol=1e-5, atol=1e-6)


def test_global_update_is_batch_invariant():
    """An image's updated centroids are bit for bit the same alone and in any batch (a
    batched GEMM's rounding may depend on the batch; k-means amplifies last bits)."""
    gen = torch.Generator().manual_seed(3)
    layer = GlobalUpdate(64).eval()
    z = torch.randn(9, 4, 64, generator=gen)
    present = torch.rand(9, 4, generator=gen) > 0.3
    present[:, 0] = True
    with torch.no_grad():
        batched = layer(z, present)
        alone = torch.cat([layer(z[i:i + 1], present[i:i + 1]) for i in range(9)])
    assert torch.equal(batched, alone)


def test_cluster_means_have_gradient_and_skip_empty():
    x = torch.randn(1, 6, 4, requires_grad=True)
    part = make_partition(torch.tensor([[0, 0, 2, 2, 2, 0]]))
    z = cluster_means(x, part)
    torch.testing.assert_close(z[0, 0], x[0, [0, 1, 5]].mean(0))
    assert torch.equal(z[0, 1], torch.zeros(4))
    z.sum().backward()
    assert x.grad.abs().sum() > 0


# --------------------------------------------------------------------- local_update
@pytest.mark.parametrize('graph_conv', sorted(GRAPH_CONVS))
@pytest.mark.parametrize('groups', [1, 4])
def test_dense_and_sparse_local_update_agree(graph_conv, groups):
    gen = torch.Generator().manual_seed(7)
    b, n, c, k = 3, 45, 16, 6
    x = torch.randn(b, n, c, generator=gen)
    z = torch.randn(b, 4, c, generator=gen)
    labels = torch.randint(0, 4, (b, n), generator=gen)
    labels[0, :40] = 0  # uneven
    labels[1] = torch.where(labels[1] == 3, 1, labels[1])  # cluster 3 empty
    labels[2, :2] = 3  # a 2-node cluster, smaller than k
    labels[2, 2:] = torch.where(labels[2, 2:] == 3, 2, labels[2, 2:])
    part = make_partition(labels)
    module = build_local_update(graph_conv, c, groups=groups).eval()
    for param in module.parameters():  # move eps/delta and BN affine off their defaults
        torch.nn.init.normal_(param, std=0.5) if param.dim() <= 1 else None
    centroids = TokenCentroids(z, labels)
    dense = module(x.transpose(1, 2), build_graph(x, part, k), centroids)

    arranged, edge_index = build_graph_sparse(x, part, k)
    flat = arranged.order
    z_token = centroids.per_token().reshape(-1, c)[flat]
    sparse = module.forward_sparse(x.reshape(-1, c)[flat], edge_index, z_token)
    sparse = torch.empty_like(sparse).index_copy_(0, flat, sparse).view(b, n, -1)
    torch.testing.assert_close(dense.transpose(1, 2), sparse, rtol=1e-4, atol=1e-5)


def dense_and_sparse(graph_conv):
    """Two DEGCs in eval mode with the same weights, dense and sparse paths."""
    torch.manual_seed(0)
    dense = DEGC(16, num_clusters=4, k=7, graph_conv=graph_conv, groups=2).eval()
    sparse = DEGC(16, num_clusters=4, k=7, graph_conv=graph_conv, groups=2,
                  graph_impl='sparse').eval()
    sparse.load_state_dict(dense.state_dict())
    return dense, sparse


@pytest.mark.parametrize('graph_conv', sorted(GRAPH_CONVS))
def test_degc_dense_sparse_modules_agree(graph_conv):
    dense, sparse = dense_and_sparse(graph_conv)
    x = torch.randn(2, 16, 7, 9)
    out = dense(x)
    assert out.shape == (2, 32, 7, 9)
    torch.testing.assert_close(out, sparse(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('reduce,chunk', [('max', None), ('max', 7 * 12 * 5), ('sum', None)])
def test_aggregation_equals_gathered_reduction(reduce, chunk, monkeypatch):
    """The (B, N, C) aggregation gives the values and gradients of gathering the
    (B, N, K, C) neighbour features and reducing them (max: also chunk by chunk)."""
    if chunk:
        monkeypatch.setattr(graph_conv, '_MAX_CHUNK_ELEMENTS', chunk)
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(3, 12, 50, generator=gen)
    labels = skewed_labels(gen)
    graph = build_graph(x.transpose(1, 2), make_partition(labels, 5), k=7)
    grad = torch.randn(3, 12, 50, generator=gen)
    x_new, x_old = x.clone().requires_grad_(), x.clone().requires_grad_()
    new = aggregate_neighbors(x_new, graph, reduce)
    picked = gather_neighbors(x_old, graph)
    if reduce == 'sum':
        old = (picked * graph.valid.unsqueeze(-1)).sum(2).transpose(1, 2)
    else:
        old = picked.amax(2).transpose(1, 2)
    torch.testing.assert_close(new, old)
    (new * grad).sum().backward()
    (old * grad).sum().backward()
    torch.testing.assert_close(x_new.grad, x_old.grad)


@pytest.mark.parametrize('graph_conv', sorted(GRAPH_CONVS))
def test_degc_dense_sparse_agree_on_padded_batch(graph_conv):
    dense, sparse = dense_and_sparse(graph_conv)
    x = torch.randn(2, 16, 7, 9)
    valid = torch.ones(2, 7, 9, dtype=torch.bool)
    valid[0, 5:] = False
    valid[0, :, 6:] = False
    valid = valid.flatten(1)
    out, inter = dense(x, valid, return_intermediates=True)
    out_sparse, inter_sparse = sparse(x, valid, return_intermediates=True)
    torch.testing.assert_close(out.flatten(2).transpose(1, 2)[valid],
                               out_sparse.flatten(2).transpose(1, 2)[valid], rtol=1e-4,
                               atol=1e-5)
    assert torch.equal(inter.partition.labels, inter_sparse.partition.labels)
    assert (inter.partition.labels[~valid] == 4).all()
    assert not inter.graph.valid[~valid].any()


def test_degc_invalid_settings():
    with pytest.raises(ValueError, match='num_clusters'):
        DEGC(8, num_clusters=0)
    with pytest.raises(ValueError, match='k must'):
        DEGC(8, k=0)
    with pytest.raises(KeyError, match='mrgcn'):
        DEGC(8, graph_conv='gcn')
    with pytest.raises(ValueError, match='dense'):
        DEGC(8, graph_impl='csr')
    with pytest.raises(ValueError, match='sync_free'):
        DEGC(8, graph_impl='sparse', sync_free=True)


def test_sparse_path_is_never_sync_free():
    """``sync_free=None`` picks the sync-free mode for CUDA inputs, except on the sparse
    path, which syncs anyway (a stand-in for a CUDA tensor: no GPU here)."""
    cuda_input = SimpleNamespace(is_cuda=True)
    assert resolve_sync_free(DEGC(8).sync_free, cuda_input)
    assert not resolve_sync_free(DEGC(8, graph_impl='sparse').sync_free, cuda_input)
