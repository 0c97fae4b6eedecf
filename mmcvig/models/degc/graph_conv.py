"""Step (iv) of DEGC, ``local_update``: the globally aware graph conv, G-GCN (paper Eq. 4,
Table II).

Every variant holds its weights once and offers two evaluations of the same math:

* ``forward(x, graph, centroids)``: dense, over a :class:`~.knn_graph.Graph` with ``K``
  neighbour slots per token, channels first as the backbone's convolutions want them
  (token-major strides, as a channels-last map flattens, cost no copy);
* ``forward_sparse(x, edge_index, z)``: the paper's, PyG message passing over the
  arranged tokens of :func:`~.graph.build_graph_sparse`.

Notation: :math:`x_v` a token, :math:`\\mathcal{N}(v)` its neighbours (itself included),
:math:`z'_i` the updated centroid of its partition, MLP a 1x1 convolution to
:math:`2C` with ``groups`` followed by BN and GELU, and ``|`` channel concatenation.
"""
from typing import NamedTuple, Sequence, Tuple

import torch
import torch.nn.functional as F
from mmcv.cnn import ConvModule
from mmengine.model import BaseModule
from torch import Tensor, nn
from torch_geometric.nn import MessagePassing
from torch_geometric.utils import scatter

from ..layers import conv_norm_act, norm_act
from .execution import flat_index, static_shapes
from .knn_graph import Graph


def interleave(*parts: Tensor) -> Tensor:
    """Concatenate along channels, interleaved (``[a0, b0, c0, a1, ...]``).

    Interleaving, as mmpretrain's ViG does, puts every kind of input into every group of
    a grouped MLP; plain concatenation would feed one group only ``x_v`` and another only
    ``z'_i``. Works on ``(B, C, ...)`` (dense) and ``(M, C)`` (sparse) alike.
    """
    stacked = torch.stack(parts, dim=2)
    return stacked.flatten(1, 2)


class TokenCentroids(NamedTuple):
    """The updated centroid :math:`z'_i` of every token's partition, held per cluster.

    Attributes:
        values (Tensor): :math:`(B, \\kappa, C)` updated centroids.
        labels (LongTensor): :math:`(B, N)` cluster of every token; ``kappa`` (batch
            padding) stands for a zero centroid.
    """
    values: Tensor
    labels: Tensor

    def padded(self) -> Tensor:
        """:math:`(B, \\kappa + 1, C)`: the centroids and a zero row for padding."""
        return F.pad(self.values, (0, 0, 0, 1))

    def per_token(self, rows: Tensor = None) -> Tensor:
        """:math:`(B, N, C')` row ``labels[b, n]`` of ``rows`` :math:`(B, \\kappa + 1, C')`
        (default: :meth:`padded`) for every token: whole rows (``index_select``), which
        is many times faster than an element-wise ``gather``."""
        rows = self.padded() if rows is None else rows
        batch, num_rows, channels = rows.shape
        index = flat_index(self.labels, num_rows).flatten()
        picked = rows.reshape(batch * num_rows, channels).index_select(0, index)
        return picked.view(batch, -1, channels)


def _token_rows(x: Tensor) -> Tensor:
    """:math:`(B, C, N)` -> :math:`(B N, C)`, one row per token."""
    return x.transpose(1, 2).reshape(-1, x.shape[1])


def gather_neighbors(x: Tensor, graph: Graph) -> Tensor:
    """Features of every neighbour slot.

    Args:
        x (Tensor): :math:`(B, C, N)`.
        graph (Graph): neighbours :math:`(B, N, K)`.

    Returns:
        Tensor: :math:`(B, N, K, C)`, channels last so one row gather serves all channels.
    """
    channels = x.shape[1]
    rows = _token_rows(x)
    # index_select copies whole rows; advanced indexing goes through a slower generic path.
    picked = rows.index_select(0, flat_index(graph.neighbors, x.shape[2]).flatten())
    return picked.view(*graph.neighbors.shape, channels)


# Neighbour rows gathered per chunk of the max: 2**18 elements (1 MiB of float32) stay
# in cache.
_MAX_CHUNK_ELEMENTS = 1 << 18


def _chunks(bags: Tensor, channels: int):
    """Row slices of ``bags`` whose gathered neighbours fit :data:`_MAX_CHUNK_ELEMENTS`."""
    num_bags, slots = bags.shape
    step = max(1, _MAX_CHUNK_ELEMENTS // (slots * channels))
    return [slice(start, start + step) for start in range(0, num_bags, step)]


def _gather(rows: Tensor, bags: Tensor) -> Tensor:
    """:math:`(M', K, C)` neighbour rows of a chunk of bags :math:`(M', K)`."""
    return rows.index_select(0, bags.flatten()).view(*bags.shape, rows.shape[1])


def _first_winner_scores(picked: Tensor, best: Tensor, rank: Tensor) -> Tensor:
    """:math:`(M', C)` score ``K - j`` of the first slot ``j`` of ``picked``
    :math:`(M', K, C)` that holds ``best`` :math:`(M', C)`, per element.

    Slot ``j`` scores ``rank[j] = K - j`` where it holds the max, so the largest score is
    the first winner (argmax over a middle dimension is 60x slower on the CPU than amax).
    """
    won = picked == best.unsqueeze(1)
    return (won.to(rank.dtype) * rank).amax(dim=1)


class _NeighborMax(torch.autograd.Function):
    """:math:`\\max_{j} x_{bags[v, j]}` for every token ``v``, chunk by chunk.

    ``F.embedding_bag(mode='max')`` computes the same, but its CPU kernel reduces element
    by element, as does ``torch.max`` with indices (both 5-6x slower than ``amax`` at
    4,200 tokens, C = 320). Here each chunk of tokens gathers its neighbours into a
    cache-sized buffer and reduces it with ``amax``. When ``x`` gets a gradient, the
    winning slot of every output element is found in the same chunk while it is in
    cache (by equality; the first winner on ties, as ``embedding_bag`` does) and kept,
    one byte per element for fewer than 256 slots; the backward then only sends each
    gradient to its winner. Nothing of size :math:`(M, K, C)` is held between forward
    and backward.
    """

    @staticmethod
    def forward(ctx, x: Tensor, bags: Tensor, needs_grad: bool) -> Tensor:
        rows = _token_rows(x)
        num_bags, slots = bags.shape
        out = rows.new_empty(num_bags, rows.shape[1])
        scores = None
        if needs_grad:
            small = torch.uint8 if slots < 256 else torch.int32
            rank = torch.arange(slots, 0, -1, dtype=small, device=x.device).view(1, -1, 1)
            scores = out.new_empty(out.shape, dtype=small)
        for chunk in _chunks(bags, rows.shape[1]):
            picked = _gather(rows, bags[chunk])
            torch.amax(picked, dim=1, out=out[chunk])
            if scores is not None:
                scores[chunk] = _first_winner_scores(picked, out[chunk], rank)
        ctx.save_for_backward(bags, scores)
        ctx.x_shape = x.shape
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        bags, scores = ctx.saved_tensors
        batch, channels, num_tokens = ctx.x_shape
        winners = bags.gather(1, bags.shape[1] - scores.long())  # (M, C) token rows
        grad_rows = grad.new_zeros(batch * num_tokens, channels).scatter_add_(0, winners, grad)
        return grad_rows.view(batch, num_tokens, channels).transpose(1, 2), None, None


# Devices on which the max over neighbours is _NeighborMax rather than embedding_bag.
NEIGHBOR_MAX_DEVICES = ('cpu', )


def _neighbor_max_on(x: Tensor) -> bool:
    """Whether the max over neighbours of ``x`` takes :class:`_NeighborMax`: on the CPU,
    and in deterministic mode, where ``embedding_bag(mode='max')``'s backward raises on
    CUDA (``_NeighborMax``'s ``scatter_add_`` has a deterministic CUDA kernel)."""
    return (x.device.type in NEIGHBOR_MAX_DEVICES
            or torch.are_deterministic_algorithms_enabled())


def aggregate_neighbors(x: Tensor, graph: Graph, reduce: str) -> Tensor:
    """:math:`\\max_{u \\in \\mathcal{N}(v)} x_u` or :math:`\\sum_{u \\in \\mathcal{N}(v)} x_u`
    for every token, without the :math:`(B, N, K, C)` tensor of neighbour features.

    ``sum`` is ``F.embedding_bag``, weighted by the valid slots; its backward routes the
    gradient to the summed rows. ``max`` is :class:`_NeighborMax` on the CPU and in
    deterministic mode, ``embedding_bag`` on other devices, where its kernel is
    parallel; either sends the
    gradient to the winning row. ``max`` may see invalid slots: they repeat the token
    itself, always a neighbour. Memory and traffic of :math:`(B, N, C)`, not :math:`K`
    times that. While tracing or compiling (static graph, ONNX has no ``embedding_bag``)
    the neighbours are gathered and reduced in one piece.

    Args:
        x (Tensor): :math:`(B, C, N)`.
        graph (Graph): neighbours :math:`(B, N, K)`.
        reduce (str): ``'max'`` or ``'sum'``.

    Returns:
        Tensor: :math:`(B, C, N)`.
    """
    if static_shapes():
        picked = gather_neighbors(x, graph)
        if reduce == 'sum':
            return (picked * graph.valid.unsqueeze(-1)).sum(2).transpose(1, 2)
        return picked.amax(dim=2).transpose(1, 2)
    batch, channels, num_tokens = x.shape
    bags = flat_index(graph.neighbors, num_tokens).view(batch * num_tokens, -1)
    if reduce == 'max' and _neighbor_max_on(x):
        out = _NeighborMax.apply(x, bags, torch.is_grad_enabled() and x.requires_grad)
    else:
        rows = _token_rows(x)
        weights = graph.valid.view_as(bags).to(rows.dtype) if reduce == 'sum' else None
        out = F.embedding_bag(bags, rows, mode=reduce, per_sample_weights=weights)
    return out.view(batch, num_tokens, channels).transpose(1, 2)


def _as_map(x: Tensor) -> Tensor:
    """:math:`(B, C, N)` -> :math:`(B, C, N, 1)` for a 1x1 convolution or BN: a column of
    tokens, a view.

    Token-major strides (a flattened channels-last map) stay channels-last: the unit
    width gets stride :math:`C`, which ``unsqueeze(-1)`` (stride 1, the same as the
    channels') would not give it, and the convolution would then read the map as NCHW.
    A column rather than a row ``(B, C, 1, N)`` of the same memory because oneDNN picks
    its kernels by the map's shape: the G-GCN's grouped 1x1 convolutions ran 7% faster
    for a CViG-S training step at 2x3x800x1344 (forward + backward, one process, A/B).
    """
    return x.transpose(1, 2).unsqueeze(2).permute(0, 3, 1, 2)


def _from_map(x: Tensor) -> Tensor:
    """Inverse of :func:`_as_map`."""
    return x.squeeze(3)


def _split_interleaved(conv: nn.Conv2d, num_parts: int) -> Tuple[Tensor, ...]:
    """The weights a 1x1 ``conv`` over ``interleave(p_0, ..., p_{n-1})`` applies to each
    ``p_i``: input channel ``n j + i`` of every group holds channel ``j`` of ``p_i``'s
    slice of that group, so ``conv`` of the interleaved input is the sum over ``i`` of
    ``p_i`` convolved (with the same groups) by ``weight[:, i::n]``."""
    return tuple(conv.weight[:, i::num_parts] for i in range(num_parts))


def interleaved_mlp(mlp: ConvModule, parts: Sequence[Tuple[Tensor, Tensor]],
                    centroids: TokenCentroids, centroid_weight: Tensor) -> Tensor:
    """``mlp(interleave(..., z'))`` evaluated part by part, without the :math:`3C`
    interleaved input.

    Each token part is convolved on its own and the results are summed; the centroid
    part, the same for every token of a cluster, is convolved once per cluster and then
    picked per token. That is a third fewer multiply-adds than the interleaved
    convolution, no interleaved copy, and nothing of :math:`3C` kept for the backward.

    Args:
        mlp (ConvModule): 1x1 conv (with groups) + norm + activation over the
            interleaved parts.
        parts (Sequence[tuple[Tensor, Tensor]]): ``(features, weight)`` of every token
            part: features :math:`(B, C, N)`, weight a slice of ``mlp.conv.weight``.
        centroids (TokenCentroids): :math:`z'`, the last interleaved part.
        centroid_weight (Tensor): its slice of ``mlp.conv.weight``.

    Returns:
        Tensor: :math:`(B, C_{out}, N)`.
    """
    conv = mlp.conv
    per_cluster = F.conv2d(_as_map(centroids.padded().transpose(1, 2)), centroid_weight,
                           conv.bias, groups=conv.groups)  # (B, C_out, 1, kappa + 1)
    h = _as_map(centroids.per_token(_from_map(per_cluster).transpose(1, 2)).transpose(1, 2))
    for features, weight in parts:
        # A conv's output is not needed for its backward: summing into it in place is safe.
        h = F.conv2d(_as_map(features), weight, groups=conv.groups).add_(h)
    return _from_map(norm_act(mlp, h))


def _as_nodes(module: nn.Module, h: Tensor) -> Tensor:
    """Apply a 1x1-conv module to sparse node features ``(M, C_in)`` -> ``(M, C_out)``."""
    return module(h.t().unsqueeze(0).unsqueeze(-1)).squeeze(-1).squeeze(0).t()


class _NeighborAggregation(MessagePassing):
    """:math:`\\bigoplus_{u \\in \\mathcal{N}(v)} m(x_v, x_u)` with PyG message passing.

    ``message`` is ``x_u`` or, with ``relative``, ``x_u - x_v``.
    """

    def __init__(self, aggr: str, relative: bool = False):
        super().__init__(aggr=aggr)
        self.relative = relative

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        return self.propagate(edge_index, x=x)

    def message(self, x_i: Tensor, x_j: Tensor) -> Tensor:
        return x_j - x_i if self.relative else x_j


class GGCN(BaseModule):
    """Base of the G-GCN variants: builds the MLPs, one per role.

    Args:
        in_channels (int): :math:`C`; the output has :math:`2C`.
        groups (int): groups of the MLPs' 1x1 convolutions.
        norm_cfg (dict): normalisation after each MLP convolution.
        act_cfg (dict): activation after each MLP normalisation.
    """

    def __init__(self, in_channels: int, groups: int = 1, norm_cfg=dict(type='BN'),
                 act_cfg=dict(type='GELU'), init_cfg=None):
        super().__init__(init_cfg)
        self.in_channels = in_channels
        self.out_channels = 2 * in_channels
        self._mlp_cfg = dict(kernel_size=1, groups=groups, bias=True, norm_cfg=norm_cfg,
                             act_cfg=act_cfg)

    def _mlp(self, in_channels: int, out_channels: int = None) -> ConvModule:
        return ConvModule(in_channels, out_channels or self.out_channels, **self._mlp_cfg)


class GMRGCN(GGCN):
    r"""G-MRGCN, the default: :math:`x'_v = \mathrm{MLP}(x_v \,|\, \max_{u \in
    \mathcal{N}(v)} (x_u - x_v) \,|\, z'_i)`."""

    def __init__(self, in_channels: int, **kwargs):
        super().__init__(in_channels, **kwargs)
        self.mlp = self._mlp(3 * in_channels)
        self.aggregate = _NeighborAggregation('max', relative=True)

    def forward(self, x: Tensor, graph: Graph, centroids: TokenCentroids) -> Tensor:
        """x: :math:`(B, C, N)`; returns :math:`(B, 2C, N)`."""
        # max_u (x_u - x_v) = max_u x_u - x_v, so W_x x_v + W_r max_u (x_u - x_v) is
        # (W_x - W_r) x_v + W_r max_u x_u: no (B, N, K, C) difference, no subtraction.
        w_x, w_r, w_z = _split_interleaved(self.mlp.conv, 3)
        neighbor_max = aggregate_neighbors(x, graph, 'max')
        return interleaved_mlp(self.mlp, [(x, w_x - w_r), (neighbor_max, w_r)], centroids, w_z)

    def forward_sparse(self, x: Tensor, edge_index: Tensor, z: Tensor) -> Tensor:
        """x, z: :math:`(M, C)`; edge_index :math:`(2, E)`; returns :math:`(M, 2C)`."""
        relative = self.aggregate(x, edge_index)
        return _as_nodes(self.mlp, interleave(x, relative, z))


class GEdgeConv(GGCN):
    r"""G-EdgeConv: :math:`x'_v = \max_{u \in \mathcal{N}(v)} \mathrm{MLP}(x_v \,|\,
    x_u - x_v \,|\, z'_i)`.

    In training, the dense path's BN statistics also see the padding slots of clusters
    smaller than ``K`` (copies of the self edge); eval outputs are identical.
    """

    def __init__(self, in_channels: int, **kwargs):
        super().__init__(in_channels, **kwargs)
        self.mlp = self._mlp(3 * in_channels)

    def forward(self, x: Tensor, graph: Graph, centroids: TokenCentroids) -> Tensor:
        x_u = gather_neighbors(x, graph).permute(0, 3, 1, 2)  # (B, C, N, K)
        x_v = x.unsqueeze(-1)
        z = centroids.per_token().transpose(1, 2).unsqueeze(-1)
        edges = interleave(x_v.expand_as(x_u), x_u - x_v, z.expand_as(x_u))
        return self.mlp(edges).amax(dim=-1)

    def forward_sparse(self, x: Tensor, edge_index: Tensor, z: Tensor) -> Tensor:
        source, target = edge_index
        edges = interleave(x[target], x[source] - x[target], z[target])
        messages = _as_nodes(self.mlp, edges)
        return scatter(messages, target, dim=0, dim_size=x.shape[0], reduce='max')


class GGraphSAGE(GGCN):
    r"""G-GraphSAGE: :math:`x'_v = \mathrm{MLP}_\Psi(x_v \,|\, \max_{u \in \mathcal{N}(v)}
    \mathrm{MLP}_\Phi(x_u) \,|\, z'_i)`, with :math:`\mathrm{MLP}_\Phi: C \to C`."""

    def __init__(self, in_channels: int, **kwargs):
        super().__init__(in_channels, **kwargs)
        self.mlp_phi = self._mlp(in_channels, in_channels)
        self.mlp_psi = self._mlp(3 * in_channels)
        self.aggregate = _NeighborAggregation('max')

    def forward(self, x: Tensor, graph: Graph, centroids: TokenCentroids) -> Tensor:
        # MLP_phi depends on x_u alone: apply it per token, then gather.
        phi = _from_map(conv_norm_act(self.mlp_phi, _as_map(x)))
        pooled = aggregate_neighbors(phi, graph, 'max')
        w_x, w_p, w_z = _split_interleaved(self.mlp_psi.conv, 3)
        return interleaved_mlp(self.mlp_psi, [(x, w_x), (pooled, w_p)], centroids, w_z)

    def forward_sparse(self, x: Tensor, edge_index: Tensor, z: Tensor) -> Tensor:
        pooled = self.aggregate(_as_nodes(self.mlp_phi, x), edge_index)
        return _as_nodes(self.mlp_psi, interleave(x, pooled, z))


class GGIN(GGCN):
    r"""G-GIN: :math:`x'_v = \mathrm{MLP}((1 + \epsilon) x_v + \sum_{u \in \mathcal{N}(v)}
    x_u + (1 + \delta) z'_i)`, :math:`\epsilon, \delta` learnable scalars (init 0)."""

    def __init__(self, in_channels: int, **kwargs):
        super().__init__(in_channels, **kwargs)
        self.mlp = self._mlp(in_channels)
        self.eps = nn.Parameter(torch.zeros(1))
        self.delta = nn.Parameter(torch.zeros(1))
        self.aggregate = _NeighborAggregation('sum')

    def _combine(self, x: Tensor, neighbor_sum: Tensor, z: Tensor) -> Tensor:
        return (1 + self.eps) * x + neighbor_sum + (1 + self.delta) * z

    def forward(self, x: Tensor, graph: Graph, centroids: TokenCentroids) -> Tensor:
        z = centroids.per_token().transpose(1, 2)
        h = self._combine(x, aggregate_neighbors(x, graph, 'sum'), z)
        return _from_map(conv_norm_act(self.mlp, _as_map(h)))

    def forward_sparse(self, x: Tensor, edge_index: Tensor, z: Tensor) -> Tensor:
        return _as_nodes(self.mlp, self._combine(x, self.aggregate(x, edge_index), z))


GRAPH_CONVS = {
    'mrgcn': GMRGCN,
    'edgeconv': GEdgeConv,
    'graphsage': GGraphSAGE,
    'gin': GGIN,
}


def build_local_update(graph_conv: str, in_channels: int, **kwargs) -> GGCN:
    """The G-GCN named ``graph_conv`` (one of :data:`GRAPH_CONVS`)."""
    if graph_conv not in GRAPH_CONVS:
        raise KeyError(f'Unknown graph_conv {graph_conv!r}; expected one of '
                       f'{sorted(GRAPH_CONVS)}')
    return GRAPH_CONVS[graph_conv](in_channels, **kwargs)
