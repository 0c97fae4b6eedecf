"""Step (ii) of DEGC, ``build_graph``: a k-NN graph inside every partition.

Two constructions of the same graph:

* :func:`build_graph` (dense, default): ``K`` neighbour slots per token. Two ways to
  compute it, with identical results:

  - *segments* (large images on the CPU): the tokens of every image are sorted by
    cluster once, so each cluster is a contiguous block of rows, and each block is
    searched against itself only. The cost is the arithmetic of
    :math:`\\sum_i |V^i|^2 C` per image, whatever the cluster sizes, and no key is
    copied per query. It reads the cluster sizes back to the host once.
  - *masked* (small images, GPUs, compilation): every token is compared with every
    token of its image, and pairs in different clusters are masked. :math:`N^2 C` per
    image, but a handful of operators, static shapes and no host read.

* :func:`build_graph_sparse` (the paper's Algorithm 2): tokens scattered into an
  "unrolled and arranged" node list of partitions and an ``edge_index`` for PyG
  message passing.

All rank neighbours by Euclidean distance of L2-normalised features (equivalently by
cosine similarity, computed in float32, or float64 for float64 input, whatever
autocast is on), always put the token itself first, and join every node of a cluster
smaller than ``k``. Tokens of batch padding (label ``kappa``) are nobody's neighbour and
have none. No gradient flows through the construction, as in ViG.
"""
from typing import List, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.utils import to_dense_batch

from .execution import at_least_float32, full_precision, static_shapes
from .kmeans import Partition

# Score given to a token's similarity with itself: above any cosine similarity (<= 1),
# so the token is always its own first neighbour, even among exact duplicates.
_SELF_SCORE = 4.0
# Below this many tokens the masked search is cheaper than per-cluster blocks: its
# extra arithmetic costs less than the blocks' operator count. build_graph alone on the
# CPU (kappa 4, C 320, K 13, 2 threads), masked vs per-cluster: 256 tokens 0.50 vs
# 0.54 ms, 324 tokens 0.83 vs 0.69 ms, 784 tokens 7.9 vs 4.5 ms.
SEGMENT_MIN_TOKENS = 300
# Query rows per similarity block: bounds the temporary (rows x keys) matrix to 64 MiB.
_MAX_BLOCK_ELEMENTS = 1 << 24


class Graph(NamedTuple):
    """A k-NN graph with ``k`` neighbour slots per token (dense layout).

    Attributes:
        neighbors (LongTensor): :math:`(B, N, K)` token index (in the input order) of
            each neighbour of each token; slot 0 is the token itself.
        valid (BoolTensor): :math:`(B, N, K)` False for the slots of tokens whose
            cluster has fewer than ``K`` nodes, and for every slot of a padding token;
            those slots point at the token itself.
    """
    neighbors: Tensor
    valid: Tensor


class ArrangedTokens(NamedTuple):
    """Tokens scattered into partitions, the paper's ``X_ua`` (Algorithm 2, line 3).

    Attributes:
        order (LongTensor): :math:`(B N,)` flat token index (``b * N + n``) of every
            arranged node; arranged node ``i`` is input token ``order[i]``.
        batch (LongTensor): :math:`(B N,)` partition of every arranged node,
            ``b * (kappa + 1) + label`` (label ``kappa``: the image's padding),
            non-decreasing.
    """
    order: Tensor
    batch: Tensor


def sort_by_cluster(labels: Tensor) -> Tensor:
    """:math:`(B, N)` token index at every position once sorted by cluster (stable, so
    raster order inside a cluster; padding last): every cluster is a contiguous run."""
    num_tokens = labels.shape[1]
    return (labels * num_tokens + torch.arange(num_tokens, device=labels.device)).argsort(1)


def arrange_by_partition(part: Partition) -> ArrangedTokens:
    """Sort the tokens of every image by cluster (stable, raster order inside a cluster).

    Args:
        part (Partition): labels :math:`(B, N)` and counts :math:`(B, \\kappa)`.
    """
    batch, num_tokens = part.labels.shape
    num_clusters = part.counts.shape[1]
    order = sort_by_cluster(part.labels)
    sorted_labels = part.labels.gather(1, order)
    image = torch.arange(batch, device=order.device).unsqueeze(1)
    return ArrangedTokens((order + image * num_tokens).flatten(),
                          (sorted_labels + image * (num_clusters + 1)).flatten())


def _self_padded(neighbors: Tensor, valid: Tensor, k: int) -> Graph:
    """Point invalid slots at the token itself and pad the slot count up to ``k``."""
    batch, num_tokens, slots = neighbors.shape
    self_idx = torch.arange(num_tokens, device=neighbors.device).view(1, -1, 1)
    neighbors = torch.where(valid, neighbors, self_idx)
    if slots < k:
        neighbors = torch.cat([neighbors, self_idx.expand(batch, -1, k - slots)], dim=2)
        valid = F.pad(valid, (0, k - slots), value=False)
    return Graph(neighbors, valid)


def _row_blocks(rows: int, elements_per_row: int) -> List[slice]:
    """Slices covering ``rows`` rows, each of at most ``_MAX_BLOCK_ELEMENTS`` elements."""
    step = max(1, _MAX_BLOCK_ELEMENTS // max(elements_per_row, 1))
    return [slice(start, min(start + step, rows)) for start in range(0, rows, step)]


def _joined(row_blocks: List[Tensor]) -> Tensor:
    """Row blocks :math:`(B, rows, K)` joined; a single block as it is (``cat`` would
    copy it, and at 196 tokens there is only one)."""
    return row_blocks[0] if len(row_blocks) == 1 else torch.cat(row_blocks, 1)


def _knn_masked(feats: Tensor, labels: Tensor, num_clusters: int, k: int) -> Graph:
    """Every token against every token of its image, other clusters masked.

    Padding tokens (label ``kappa``) share a label, so they only ever match each other;
    their slots are all made invalid below, so no real token sees them. The similarity
    is edited in place: at 196 tokens the operator count, not the arithmetic, is what
    this step costs.
    """
    batch, num_tokens, _ = feats.shape
    top_sims, tops = [], []
    for rows in _row_blocks(num_tokens, batch * num_tokens):
        sim = feats[:, rows] @ feats.transpose(1, 2)  # (B, rows, N)
        sim.masked_fill_(labels[:, rows].unsqueeze(-1) != labels.unsqueeze(1), float('-inf'))
        sim.diagonal(rows.start, dim1=1, dim2=2).fill_(_SELF_SCORE)
        top_sim, top = sim.topk(min(k, num_tokens), dim=-1)
        top_sims.append(top_sim)
        tops.append(top)
    top_sim, top = _joined(top_sims), _joined(tops)
    valid = (top_sim > float('-inf')) & (labels < num_clusters).unsqueeze(-1)
    return _self_padded(top, valid, k)


def _knn_segments(feats: Tensor, part: Partition, k: int) -> Graph:
    """Per-cluster blocks of the cluster-sorted features, searched against themselves."""
    batch, num_tokens, channels = feats.shape
    offset = torch.arange(batch, device=feats.device).unsqueeze(1) * num_tokens
    order = (sort_by_cluster(part.labels) + offset).flatten()  # sorted position -> token
    keys = feats.reshape(-1, channels).index_select(0, order)
    # Neighbours as sorted positions; by default the token itself, not a neighbour.
    nbr = torch.arange(batch * num_tokens, device=feats.device).unsqueeze(1).repeat(1, k)
    valid = torch.zeros(batch * num_tokens, k, dtype=torch.bool, device=feats.device)
    for image, sizes in enumerate(part.counts.tolist()):  # the one host read
        start = image * num_tokens
        for size in sizes:
            _knn_block(keys[start:start + size], start, k, nbr, valid)
            start += size
    # Back to input order: the rows (index_copy) and the neighbour ids (gather).
    nbr = order.index_select(0, nbr.flatten()).view_as(nbr)
    neighbors = torch.empty_like(nbr).index_copy_(0, order, nbr)
    valid = torch.empty_like(valid).index_copy_(0, order, valid)
    return Graph(neighbors.view(batch, num_tokens, k) - offset.unsqueeze(-1),
                 valid.view(batch, num_tokens, k))


def _knn_block(keys: Tensor, start: int, k: int, nbr: Tensor, valid: Tensor):
    """k-NN of one cluster (``keys``, rows ``start...`` of the sorted tokens), written
    into rows of ``nbr`` / ``valid``."""
    size = keys.shape[0]
    slots = min(k, size)
    for rows in _row_blocks(size, size):
        sim = keys[rows] @ keys.t()  # (rows, size)
        sim.diagonal(rows.start).fill_(_SELF_SCORE)
        nbr[start + rows.start:start + rows.stop, :slots] = sim.topk(slots, dim=1)[1] + start
        valid[start + rows.start:start + rows.stop, :slots] = True


KNN_METHODS = ('auto', 'masked', 'segments')


@torch.no_grad()
def build_graph(x: Tensor, part: Partition, k: int, method: str = 'auto') -> Graph:
    """k-NN inside each partition, dense.

    Args:
        x (Tensor): :math:`(B, N, C)` token features.
        part (Partition): the partition of ``x``.
        k (int): neighbours per token, self included.
        method (str): ``'masked'`` (no host read, static shapes), ``'segments'`` or
            ``'auto'``: segments from :data:`SEGMENT_MIN_TOKENS` tokens on, masked
            below and whenever tracing or compiling. Same graph either way.

    Returns:
        Graph: neighbours :math:`(B, N, K)` in input token order.
    """
    if method not in KNN_METHODS:
        raise ValueError(f'Unknown k-NN method {method!r}; expected one of {KNN_METHODS}')
    if method == 'auto':
        large = x.shape[1] >= SEGMENT_MIN_TOKENS
        method = 'segments' if large and not static_shapes() else 'masked'
    with full_precision(x):
        feats = F.normalize(at_least_float32(x), dim=-1)
        if method == 'masked':
            return _knn_masked(feats, part.labels, part.counts.shape[1], k)
        return _knn_segments(feats, part, k)


@torch.no_grad()
def build_graph_sparse(x: Tensor, part: Partition, k: int):
    """k-NN inside each partition as an ``edge_index`` over the arranged tokens.

    Follows Algorithm 2: tokens are scattered into partitions, each partition is padded
    to the largest one (``to_dense_batch``) and searched exhaustively. Padding tokens
    stay in the arrangement (after their image's clusters) without any edge.

    Args:
        x (Tensor): :math:`(B, N, C)` token features.
        part (Partition): the partition of ``x``.
        k (int): neighbours per token, self included.

    Returns:
        tuple[ArrangedTokens, LongTensor]: the arrangement and ``edge_index``
        :math:`(2, E)` (row 0 source = neighbour, row 1 target = node), both indexing
        arranged nodes.
    """
    with full_precision(x):
        return _knn_sparse(x, part, k)


def _knn_sparse(x: Tensor, part: Partition, k: int):
    """:func:`build_graph_sparse` in float32."""
    batch, num_tokens, channels = x.shape
    num_clusters = part.counts.shape[1]
    arranged = arrange_by_partition(part)
    feats = F.normalize(at_least_float32(x), dim=-1).reshape(-1, channels)[arranged.order]
    real = (arranged.batch % (num_clusters + 1)) < num_clusters
    dense, mask = to_dense_batch(feats[real], arranged.batch[real],
                                 batch_size=batch * (num_clusters + 1))
    sim = dense @ dense.transpose(1, 2)  # (P, M, M)
    eye = torch.eye(sim.shape[1], dtype=torch.bool, device=sim.device)
    sim = sim.masked_fill(eye, _SELF_SCORE).masked_fill(~mask.unsqueeze(1), float('-inf'))
    top_sim, top = sim.topk(min(k, sim.shape[1]), dim=-1)  # (P, M, k)

    sizes = torch.bincount(arranged.batch, minlength=batch * (num_clusters + 1))
    ptr = sizes.cumsum(0) - sizes
    source = top + ptr.view(-1, 1, 1)
    target = (torch.arange(sim.shape[1], device=sim.device) + ptr.view(-1, 1)).unsqueeze(-1)
    keep = (top_sim > float('-inf')) & mask.unsqueeze(-1)
    edge_index = torch.stack([source[keep], target.expand_as(source)[keep]])
    return arranged, edge_index
