"""Step (ii) of DEGC: a k-NN graph inside every partition.

Two interchangeable constructions of the same graph:

* :func:`build_graph` (dense, default): a fixed number of neighbour slots per token,
  computed tile by tile over the tokens sorted by cluster, so the cost follows the
  cluster sizes instead of :math:`N^2` and no Python loop runs over clusters.
* :func:`build_graph_sparse` (the paper's Algorithm 2): tokens scattered into an
  "unrolled and arranged" node list of :math:`B \\kappa` partitions and an ``edge_index``
  for PyG message passing.

Both rank neighbours by Euclidean distance of L2-normalised features (equivalently by
cosine similarity), always include the token itself, and join every node of a cluster
smaller than ``k``. No gradient flows through the construction, as in ViG.
"""
from typing import NamedTuple

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.utils import to_dense_batch

from .partition import Partition

# Score given to a token's similarity with itself: above any cosine similarity (<= 1),
# so the token is always its own first neighbour, even among exact duplicates.
_SELF_SCORE = 4.0


class Graph(NamedTuple):
    """A k-NN graph with ``k`` neighbour slots per token (dense layout).

    Attributes:
        neighbors (LongTensor): :math:`(B, N, K)` token index (in the input order) of
            each neighbour of each token; slot 0 is the token itself.
        valid (BoolTensor): :math:`(B, N, K)` False for the padding slots of tokens whose
            cluster has fewer than ``K`` nodes; those slots point at the token itself.
    """
    neighbors: Tensor
    valid: Tensor


class ArrangedTokens(NamedTuple):
    """Tokens scattered into partitions, the paper's ``X_ua`` (Algorithm 2, line 3).

    Attributes:
        order (LongTensor): :math:`(B N,)` flat token index (``b * N + n``) of every
            arranged node; arranged node ``i`` is input token ``order[i]``.
        batch (LongTensor): :math:`(B N,)` partition of every arranged node,
            ``b * kappa + label``, non-decreasing.
    """
    order: Tensor
    batch: Tensor


def arrange_by_partition(part: Partition) -> ArrangedTokens:
    """Sort the tokens of every image by cluster (stable, raster order inside a cluster).

    Args:
        part (Partition): labels :math:`(B, N)` and counts :math:`(B, \\kappa)`.
    """
    batch, num_tokens = part.labels.shape
    num_clusters = part.counts.shape[1]
    order = _sort_by_cluster(part)
    sorted_labels = part.labels.gather(1, order)
    image = torch.arange(batch, device=order.device).unsqueeze(1)
    return ArrangedTokens((order + image * num_tokens).flatten(),
                          (sorted_labels + image * num_clusters).flatten())


def _self_padded(neighbors: Tensor, valid: Tensor, k: int) -> Graph:
    """Point invalid slots at the token itself and pad the slot count up to ``k``."""
    batch, num_tokens, slots = neighbors.shape
    self_idx = torch.arange(num_tokens, device=neighbors.device).view(1, -1, 1)
    neighbors = torch.where(valid, neighbors, self_idx)
    if slots < k:
        neighbors = torch.cat([neighbors, self_idx.expand(batch, -1, k - slots)], dim=2)
        valid = F.pad(valid, (0, k - slots), value=False)
    return Graph(neighbors, valid)


def _sort_by_cluster(part: Partition) -> Tensor:
    """:math:`(B, N)` token index at every position once sorted by cluster (stable, so
    raster order inside a cluster): every cluster becomes a contiguous run."""
    labels = part.labels
    num_tokens = labels.shape[1]
    return (labels * num_tokens + torch.arange(num_tokens, device=labels.device)).argsort(1)


class TileLayout(NamedTuple):
    """Query tiles of :func:`build_graph`, each inside a single cluster.

    Positions index the tokens sorted by cluster (see :func:`_sort_by_cluster`).

    Attributes:
        query (LongTensor): :math:`(B, T_n, T)` query positions of every tile.
        query_ok (BoolTensor): :math:`(B, T_n, T)` False for padding queries.
        key (LongTensor): :math:`(B, T_n, W)` key positions: the tile's whole cluster,
            :math:`W = \\max_i |V^i|`.
        key_ok (BoolTensor): :math:`(B, T_n, W)` False for padding keys.
        rank (LongTensor): :math:`(B, T_n, T)` rank of every query in its cluster (key
            slot ``rank`` is the query itself).
    """
    query: Tensor
    query_ok: Tensor
    key: Tensor
    key_ok: Tensor
    rank: Tensor


def _static_shapes() -> bool:
    """True while tracing, exporting or compiling: shapes must not depend on values."""
    return (torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()
            or torch.compiler.is_compiling())


def tile_layout(part: Partition, tile: int) -> TileLayout:
    """Cut every cluster into tiles of ``tile`` queries; a tile's keys are its cluster.

    There are at most :math:`\\lceil N / T \\rceil + \\kappa` tiles of :math:`T`
    queries and :math:`\\max_i |V^i|` keys each. While tracing, exporting or compiling,
    those bounds (with :math:`N` keys) are used instead of the data's values, so one
    graph serves every input.
    """
    counts = part.counts
    batch, num_clusters = counts.shape
    num_tokens = part.labels.shape[1]
    device = counts.device
    tiles = (counts + tile - 1) // tile
    tile_end = tiles.cumsum(1)
    if _static_shapes():
        num_tiles, width = -(-num_tokens // tile) + num_clusters, num_tokens
    else:
        num_tiles, width = int(tile_end[:, -1].max()), int(counts.max())
    tile_id = torch.arange(num_tiles, device=device).expand(batch, -1).contiguous()
    cluster = torch.searchsorted(tile_end, tile_id, right=True).clamp(max=num_clusters - 1)
    size = counts.gather(1, cluster).unsqueeze(-1)
    base = (counts.cumsum(1) - counts).gather(1, cluster).unsqueeze(-1)
    first = (tile_id - (tile_end - tiles).gather(1, cluster)).unsqueeze(-1) * tile
    rank = first + torch.arange(tile, device=device)
    key_rank = torch.arange(width, device=device)
    return TileLayout(query=(base + rank).clamp(max=num_tokens - 1), query_ok=rank < size,
                      key=(base + key_rank).clamp(max=num_tokens - 1), key_ok=key_rank < size,
                      rank=rank)


def default_tile(num_tokens: int) -> int:
    """Queries per tile: the power of two nearest :math:`2\\sqrt{N}` (16 at least).

    Every tile copies its cluster's keys, so small tiles multiply that copy (at
    1333x800, 4,200 tokens, tiles of 32 made the copy 60% of build_graph), while large
    tiles pad each cluster with up to ``tile - 1`` idle queries. Depends on the shape
    only, so traced and exported graphs keep it.
    """
    return max(16, 2**round(math.log2(2 * math.sqrt(num_tokens))))


@torch.no_grad()
def build_graph(x: Tensor, part: Partition, k: int, tile: int = None) -> Graph:
    """k-NN inside each partition, dense and tiled.

    The tokens of each image are sorted by cluster, every cluster is cut into tiles of
    ``tile`` queries and each tile is searched against its own cluster only (one batched
    matmul for all tiles of all images). Cost is
    :math:`O(B (N + \\kappa T) \\max_i |V^i| C)`: :math:`O(N^2 / \\kappa)` for balanced
    clusters, never the :math:`O(N^2)` of a global k-NN unless one cluster takes all.

    Args:
        x (Tensor): :math:`(B, N, C)` token features.
        part (Partition): the partition of ``x``.
        k (int): neighbours per token, self included.
        tile (int, optional): queries per tile; :func:`default_tile` when None.

    Returns:
        Graph: neighbours :math:`(B, N, K)` in input token order.
    """
    batch, num_tokens, channels = x.shape
    layout = tile_layout(part, min(tile or default_tile(num_tokens), num_tokens))
    num_tiles, tile, width = layout.query.shape[1], layout.query.shape[2], layout.key.shape[2]
    # Work on flat token indices (b * N + n): features are then picked as whole rows.
    offset = torch.arange(batch, device=x.device).unsqueeze(1) * num_tokens
    order = _sort_by_cluster(part) + offset
    query = order.gather(1, layout.query.view(batch, -1))  # (B, tiles * T)
    key = order.gather(1, layout.key.view(batch, -1)).view(batch, num_tiles, 1, width)
    feats = F.normalize(x.float(), dim=-1).reshape(-1, channels)

    # index_select copies whole rows; advanced indexing goes through a slower generic path.
    queries = feats.index_select(0, query.flatten()).view(batch, num_tiles, tile, channels)
    keys = feats.index_select(0, key.flatten()).view(batch, num_tiles, width, channels)
    sim = queries @ keys.transpose(-1, -2)  # (B, tiles, T, W)
    is_self = layout.rank.unsqueeze(-1) == torch.arange(width, device=x.device)
    sim.masked_fill_(is_self, _SELF_SCORE)
    sim.masked_fill_(~layout.key_ok.unsqueeze(2), float('-inf'))
    top_sim, top = sim.topk(min(k, width), dim=-1)
    nbr = key.expand(-1, -1, tile, -1).gather(-1, top).view(batch * num_tiles * tile, -1)
    valid = (top_sim > float('-inf')).view_as(nbr)

    # Back to input order; padding queries write to one extra, dropped row.
    rows = query.masked_fill(~layout.query_ok.view(batch, -1), batch * num_tokens).flatten()
    neighbors = nbr.new_zeros(batch * num_tokens + 1, nbr.shape[1]).index_copy_(0, rows, nbr)
    valid_out = valid.new_zeros(neighbors.shape).index_copy_(0, rows, valid)
    neighbors = neighbors[:-1].view(batch, num_tokens, -1) - offset.unsqueeze(-1)
    valid_out = valid_out[:-1].view(batch, num_tokens, -1)
    return _self_padded(neighbors, valid_out, k)


@torch.no_grad()
def build_graph_sparse(x: Tensor, part: Partition, k: int):
    """k-NN inside each partition as an ``edge_index`` over the arranged tokens.

    Follows Algorithm 2: tokens are scattered into :math:`B \\kappa` partitions, each
    partition is padded to the largest one (``to_dense_batch``) and searched exhaustively.

    Args:
        x (Tensor): :math:`(B, N, C)` token features.
        part (Partition): the partition of ``x``.
        k (int): neighbours per token, self included.

    Returns:
        tuple[ArrangedTokens, LongTensor]: the arrangement and ``edge_index``
        :math:`(2, E)` (row 0 source = neighbour, row 1 target = node), both indexing
        arranged nodes.
    """
    batch, num_tokens, channels = x.shape
    arranged = arrange_by_partition(part)
    feats = F.normalize(x.float(), dim=-1).reshape(-1, channels)[arranged.order]
    dense, mask = to_dense_batch(feats, arranged.batch, batch_size=part.counts.numel())
    sim = dense @ dense.transpose(1, 2)  # (P, M, M)
    eye = torch.eye(sim.shape[1], dtype=torch.bool, device=sim.device)
    sim = sim.masked_fill(eye, _SELF_SCORE).masked_fill(~mask.unsqueeze(1), float('-inf'))
    top_sim, top = sim.topk(min(k, sim.shape[1]), dim=-1)  # (P, M, k)

    ptr = part.counts.flatten().cumsum(0) - part.counts.flatten()
    source = top + ptr.view(-1, 1, 1)
    target = (torch.arange(sim.shape[1], device=sim.device) + ptr.view(-1, 1)).unsqueeze(-1)
    keep = (top_sim > float('-inf')) & mask.unsqueeze(-1)
    edge_index = torch.stack([source[keep], target.expand_as(source)[keep]])
    return arranged, edge_index
