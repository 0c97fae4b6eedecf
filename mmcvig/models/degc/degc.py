"""The DEGC module: partition, build_graph, global_update, local_update (Algorithm 2)."""
from typing import NamedTuple, Optional, Union

import torch
from mmengine.model import BaseModule
from torch import Tensor
from torch.profiler import record_function

from .centroid_attention import GlobalUpdate, cluster_means
from .execution import at_least_float32, forward_graph, full_precision, resolve_sync_free
from .graph_conv import TokenCentroids, build_local_update
from .kmeans import KMEANS_INITS, Partition, cluster_sums, partition
from .knn_graph import ArrangedTokens, Graph, build_graph, build_graph_sparse

GRAPH_IMPLS = ('dense', 'sparse')


class SparseGraph(NamedTuple):
    """The graph of the sparse path: arranged tokens and ``edge_index`` over them (see
    :func:`~.knn_graph.build_graph_sparse`)."""
    arranged: ArrangedTokens
    edge_index: Tensor


class DEGCIntermediates(NamedTuple):
    """What one DEGC computed, returned on request (``return_intermediates=True``).

    Attributes:
        partition (Partition): labels, cluster sizes and k-means iterations.
        graph (Graph | SparseGraph): the k-NN graph inside the partitions.
        centroids (Tensor): :math:`(B, \\kappa, C)` updated centroids :math:`z'`.
    """
    partition: Partition
    graph: Union[Graph, SparseGraph]
    centroids: Tensor


def as_tokens(x: Tensor) -> Tensor:
    """:math:`(B, C, H, W)` -> :math:`(B, N, C)`, a view of a channels-last map.

    ``permute`` + ``reshape`` rather than ``flatten(2).transpose(1, 2)``: the latter
    gives a batch of one an arbitrary batch stride, and the token-major maps built from
    it then no longer read as channels-last to the convolutions.
    """
    batch, channels, height, width = x.shape
    return x.permute(0, 2, 3, 1).reshape(batch, height * width, channels)


@torch.no_grad()
def image_means(tokens: Tensor, valid: Optional[Tensor] = None) -> Tensor:
    """:math:`(B, 1, C)` mean of every image's own tokens, in float32 or wider, no
    gradient.

    Summed token by token in input order (:func:`~.kmeans.cluster_sums` with a single
    cluster; padding adds into a dropped row), so an image alone and the same image
    padded in a batch get the same mean to the last bit. Float32 whatever the tokens'
    dtype or autocast: a sum of thousands of half-precision tokens overflows.

    Args:
        tokens (Tensor): :math:`(B, N, C)`.
        valid (BoolTensor, optional): :math:`(B, N)` False for batch padding.
    """
    batch, num_tokens, _ = tokens.shape
    tokens = at_least_float32(tokens)
    if valid is None:
        labels = tokens.new_zeros(batch, num_tokens, dtype=torch.long)
        count = tokens.new_full((batch, 1, 1), num_tokens)
    else:
        labels = (~valid).long()  # 1: the dropped row
        count = valid.sum(1).view(-1, 1, 1).to(tokens.dtype)
    with full_precision(tokens):
        return cluster_sums(tokens, labels, 1) / count


def _as_feature_map(out: Tensor, x: Tensor) -> Tensor:
    """:math:`(B, C', N)` -> :math:`(B, C', H, W)` of ``x``'s size, in ``x``'s layout.

    For a channels-last ``x`` the map is rebuilt from :math:`(B, N, C')`: a ``view`` of
    the token-major output would get an arbitrary stride on a batch dimension of size 1,
    which convolutions then no longer read as channels-last.
    """
    batch, _, height, width = x.shape
    if x.is_contiguous(memory_format=torch.channels_last):
        return out.transpose(1, 2).reshape(batch, height, width, -1).permute(0, 3, 1, 2)
    return out.view(batch, -1, height, width)


def _check_positive(name: str, value: int):
    if not isinstance(value, int) or value < 1:
        raise ValueError(f'{name} must be a positive integer, got {value!r}')


class DEGC(BaseModule):
    r"""Dynamic Efficient Graph Convolution.

    For the tokens :math:`X \in \mathbb{R}^{N \times C}` of every image, centred
    (:math:`X - \bar{X}`, see ``center_tokens``):

    1. ``partition``: k-means into :math:`\kappa` clusters :math:`V^i` (no gradient);
    2. ``build_graph``: k-NN graph inside every cluster (L2-normalised features);
    3. ``global_update``: :math:`z_i = \mathrm{mean}(X_i)`, :math:`z' = \mathrm{GATv2}(z)`
       over the complete graph of the non-empty clusters;
    4. ``local_update``: G-GCN, :math:`x'_v = \Psi(x_v, z'_i, \bigoplus_{u \in
       \mathcal{N}(v)} \Phi(x_v, x_u, z'_i))` for every :math:`v \in V^i`.

    One output per input token, in input order.

    Args:
        in_channels (int): :math:`C`; the output has :math:`2C`.
        num_clusters (int): :math:`\kappa`.
        cluster_size (int, optional): if given, :math:`\kappa` follows the token count,
            ``ceil(N / cluster_size)``, instead of ``num_clusters``: the k-NN cost then
            grows linearly with :math:`N` at high resolution. ``None`` (the paper's fixed
            :math:`\kappa`) by default.
        k (int): neighbours per token, self included.
        graph_conv (str): G-GCN variant: 'mrgcn', 'edgeconv', 'graphsage' or 'gin'.
        groups (int): groups of the G-GCN MLP convolutions.
        graph_impl (str): 'dense' (default, tiled k-NN + gathers) or 'sparse' (the
            paper's scatter + PyG message passing); same weights, same result.
        kmeans_iters (int): at most this many k-means iterations.
        kmeans_init (str): 'grid' (deterministic) or 'random'.
        kmeans_tol (float, optional): early stop of k-means, see :func:`partition`.
        sync_free (bool, optional): never read a value back to the host (k-means runs
            every iteration, masked k-NN): what a GPU wants. ``None`` (default) picks it
            for CUDA inputs with ``graph_impl='dense'``; the sparse path, whose edge list
            has a data-dependent size, is never sync-free.
        center_tokens (bool): subtract from every image's tokens their mean (over the
            image's own tokens, batch padding excluded; no gradient through the mean)
            before all four steps, as the authors' trained models do: their k-means
            (torch_kmeans with ``normalize=True``) centres DEGC's token tensor in place,
            so their k-NN, centroids and G-GCN all see centred tokens. The partition
            does not change (k-means is translation invariant); the k-NN of normalised
            features, the centroids and the G-GCN do. On by default; ``False`` is the
            paper read literally.
        detach_centroids (bool): no gradient reaches the tokens through the centroids
            :math:`z` (the authors' centroids come out of k-means under ``no_grad``);
            GATv2's own parameters still learn. On by default; ``False`` lets the
            gradient flow through the cluster means too.

    Every step runs inside a ``torch.profiler.record_function`` range named
    ``degc.partition``, ``degc.build_graph``, ``degc.global_update`` and
    ``degc.local_update``, so any profiler trace shows them by name.
    """

    def __init__(self, in_channels: int, num_clusters: int = 4, k: int = 9,
                 cluster_size: int = None, graph_conv: str = 'mrgcn', groups: int = 1,
                 graph_impl: str = 'dense',
                 kmeans_iters: int = 20, kmeans_init: str = 'grid', kmeans_tol: float = 0.0,
                 sync_free: Optional[bool] = None, center_tokens: bool = True,
                 detach_centroids: bool = True, norm_cfg=dict(type='BN'),
                 act_cfg=dict(type='GELU'), init_cfg=None):
        super().__init__(init_cfg)
        _check_positive('num_clusters', num_clusters)
        _check_positive('k', k)
        if cluster_size is not None:
            _check_positive('cluster_size', cluster_size)
        _check_positive('kmeans_iters', kmeans_iters)
        if graph_impl not in GRAPH_IMPLS:
            raise ValueError(f'Unknown graph_impl {graph_impl!r}; expected one of {GRAPH_IMPLS}')
        if kmeans_init not in KMEANS_INITS:
            raise ValueError(f'Unknown kmeans_init {kmeans_init!r}; expected one of '
                             f'{KMEANS_INITS}')
        if in_channels % groups:
            raise ValueError(f'in_channels ({in_channels}) must be divisible by groups '
                             f'({groups})')
        self.num_clusters = num_clusters
        self.cluster_size = cluster_size
        self.k = k
        self.graph_impl = graph_impl
        if sync_free and graph_impl != 'dense':
            raise ValueError("sync_free needs graph_impl='dense': the sparse path's edge list "
                             'has a data-dependent size')
        # The sparse path reads sizes back to build its edge list: sync-free would only
        # cost k-means its early stop, so None never picks it there, even on CUDA.
        self.sync_free = False if graph_impl == 'sparse' else sync_free
        self.center_tokens = center_tokens
        self.detach_centroids = detach_centroids
        self.kmeans_cfg = dict(max_iters=kmeans_iters, init=kmeans_init, tol=kmeans_tol)
        self.global_update = GlobalUpdate(in_channels)
        self.local_update = build_local_update(graph_conv, in_channels, groups=groups,
                                               norm_cfg=norm_cfg, act_cfg=act_cfg)

    def forward(self, x: Tensor, valid: Optional[Tensor] = None,
                return_intermediates: bool = False):
        """
        Args:
            x (Tensor): :math:`(B, C, H, W)`.
            valid (BoolTensor, optional): :math:`(B, H W)` False for tokens of batch
                padding: they join no cluster, count in no centroid and are nobody's
                neighbour (their outputs are meaningless).
            return_intermediates (bool): also return :class:`DEGCIntermediates`.

        Returns:
            Tensor: :math:`(B, 2C, H, W)`; with ``return_intermediates`` a tuple
            ``(output, DEGCIntermediates)``.
        """
        tokens = self.step_tokens(x, valid)
        sync_free = resolve_sync_free(self.sync_free, x)
        part, graph = forward_graph(lambda: self._partition_and_graph(tokens, valid, sync_free))
        with record_function('degc.global_update'):
            centroids = self.step_global_update(tokens, part)
        with record_function('degc.local_update'):
            out = self.step_local_update(x, tokens, graph, centroids)
        if return_intermediates:
            return out, DEGCIntermediates(part, graph, centroids.values)
        return out

    # The four steps of Algorithm 2, one method each, after the tokens are made
    # (``forward`` runs them in order; mmcvig.analysis also times them one by one).
    def step_tokens(self, x: Tensor, valid: Optional[Tensor]) -> Tensor:
        """:math:`(B, C, H, W)` -> the tokens :math:`(B, N, C)` every step works on:
        :func:`as_tokens`, centred per image with ``center_tokens``."""
        tokens = as_tokens(x)
        if not self.center_tokens:
            return tokens
        return tokens - image_means(tokens, valid).to(tokens.dtype)

    def step_partition(self, tokens: Tensor, valid: Optional[Tensor],
                       sync_free: bool) -> Partition:
        """k-means of the tokens :math:`(B, N, C)` of every image."""
        return partition(tokens, self.clusters_for(tokens.shape[1]), valid=valid,
                         sync_free=sync_free, **self.kmeans_cfg)

    def step_build_graph(self, tokens: Tensor, part: Partition,
                         sync_free: bool) -> Union[Graph, SparseGraph]:
        """k-NN graph inside every partition (dense slots or the sparse edge list)."""
        if self.graph_impl == 'sparse':
            return SparseGraph(*build_graph_sparse(tokens, part, self.k))
        return build_graph(tokens, part, self.k, 'masked' if sync_free else 'auto')

    def step_global_update(self, tokens: Tensor, part: Partition) -> TokenCentroids:
        """Updated centroids :math:`z'`, with the labels that give every token its own."""
        if self.detach_centroids:
            tokens = tokens.detach()
        with full_precision(tokens):  # sums of many half-precision tokens overflow
            z = cluster_means(at_least_float32(tokens), part).to(tokens.dtype)
        z = self.global_update(z, part.counts > 0)
        return TokenCentroids(z, part.labels)

    def step_local_update(self, x: Tensor, tokens: Tensor, graph: Union[Graph, SparseGraph],
                          centroids: TokenCentroids) -> Tensor:
        """G-GCN of every token: :math:`(B, C, H, W)` -> :math:`(B, 2C, H, W)`
        (``tokens``: :func:`as_tokens` of ``x``, which sets the output's layout)."""
        if self.graph_impl == 'sparse':
            out = self._sparse_local_update(tokens, graph, centroids.per_token())
        else:
            out = self.local_update(tokens.transpose(1, 2), graph, centroids)
        return _as_feature_map(out, x)

    def _partition_and_graph(self, tokens: Tensor, valid: Optional[Tensor], sync_free: bool):
        with record_function('degc.partition'):
            part = self.step_partition(tokens, valid, sync_free)
        with record_function('degc.build_graph'):
            graph = self.step_build_graph(tokens, part, sync_free)
        return part, graph

    def clusters_for(self, num_tokens: int) -> int:
        """:math:`\\kappa` used for ``num_tokens`` tokens."""
        if self.cluster_size is None:
            return self.num_clusters
        return -(-num_tokens // self.cluster_size)

    def _sparse_local_update(self, tokens: Tensor, graph: SparseGraph,
                             z_token: Tensor) -> Tensor:
        """Algorithm 2 lines 3-5: scatter, local_update over edge_index, gather."""
        batch, num_tokens, channels = tokens.shape
        arranged, edge_index = graph
        flat_x = tokens.reshape(-1, channels)[arranged.order]
        flat_z = z_token.reshape(-1, channels)[arranged.order]
        out = self.local_update.forward_sparse(flat_x, edge_index, flat_z)
        out = out.new_empty(out.shape).index_copy_(0, arranged.order, out)
        return out.view(batch, num_tokens, -1).transpose(1, 2)
