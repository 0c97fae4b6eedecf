"""Step (i) of DEGC, ``partition``: batched k-means over the tokens of every image."""
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .execution import exporting, full_precision, row_offsets

KMEANS_INITS = ('grid', 'random')


class Partition(NamedTuple):
    """Result of :func:`partition`.

    Attributes:
        labels (LongTensor): :math:`(B, N)` cluster of every token, in ``[0, kappa)``;
            tokens outside ``valid`` (batch padding) get ``kappa``: no cluster.
        counts (LongTensor): :math:`(B, \\kappa)` tokens per cluster; may hold zeros.
        iters (LongTensor, optional): :math:`()` Lloyd iterations run, up to the one
            that found the fixed point (the most over the batch).
    """
    labels: Tensor
    counts: Tensor
    iters: Optional[Tensor] = None


def one_hot_clusters(labels: Tensor, num_clusters: int, dtype: torch.dtype) -> Tensor:
    """:math:`(B, N, \\kappa)` membership; a padding token (label ``kappa``) is in none.

    A comparison with every cluster id rather than ``F.one_hot``, whose CPU kernel reads
    the labels' min and max back to check them (two host reads per call).
    """
    clusters = torch.arange(num_clusters, device=labels.device)
    return (labels.unsqueeze(-1) == clusters).to(dtype)


def _init_centroids(x: Tensor, num_clusters: int, init: str, valid: Optional[Tensor]) -> Tensor:
    """Pick ``num_clusters`` tokens of every image as initial centroids.

    ``grid`` takes the tokens at the centres of ``num_clusters`` equal segments of the
    image's own tokens in raster order, so the result depends on the image only (eval is
    deterministic and blind to batch mates and padding); ``random`` is the paper's single
    random initialisation.
    """
    batch, num_tokens, _ = x.shape
    centre = torch.arange(num_clusters, device=x.device) * 2 + 1
    if init == 'grid' and valid is None:
        idx = (centre * num_tokens // (2 * num_clusters)).expand(batch, -1)
    elif init == 'grid':
        # Rank r among the valid tokens sits where their running count first reaches r+1.
        rank = centre * valid.sum(1, keepdim=True) // (2 * num_clusters)
        idx = torch.searchsorted(valid.cumsum(1), rank + 1).clamp(max=num_tokens - 1)
    elif init == 'random':
        keys = torch.rand(batch, num_tokens, device=x.device)
        if valid is not None:
            keys = keys.masked_fill(~valid, 2.0)  # padding after every real token
        idx = keys.argsort(dim=1)[:, :num_clusters]
    else:
        raise ValueError(f'Unknown k-means init {init!r}; expected one of {KMEANS_INITS}')
    return x.gather(1, idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def cluster_sums(x: Tensor, labels: Tensor, num_clusters: int) -> Tensor:
    """:math:`(B, \\kappa, C)` sum of every cluster's tokens (differentiable in ``x``).

    Accumulated token by token in input order (``index_add``), not as a matmul with the
    membership matrix: a matmul's summation order depends on the token count, so an
    image's sums would change in the last bits with the batch padding around it, and
    k-means turns such bits into other labels at near-ties. Padding tokens (label
    ``kappa``) add into a row that is dropped.
    """
    if exporting():
        # ONNX's scatter does not accumulate repeated indices; exports never pad.
        return one_hot_clusters(labels, num_clusters, x.dtype).transpose(1, 2) @ x
    batch, num_tokens, channels = x.shape
    offset = row_offsets(batch, num_clusters + 1, x.device)
    return _scatter_sums(x.reshape(batch * num_tokens, channels), labels, offset, num_clusters)


def _scatter_sums(flat_x: Tensor, labels: Tensor, offset: Optional[Tensor],
                  num_clusters: int) -> Tensor:
    """:func:`cluster_sums` of the tokens stacked, :math:`(B N, C)`, with the per-image
    row ``offset`` of :func:`~.execution.row_offsets` already made."""
    batch = labels.shape[0]
    rows = labels if offset is None else labels + offset
    sums = flat_x.new_zeros(batch * (num_clusters + 1), flat_x.shape[1])
    sums.index_add_(0, rows.view(-1), flat_x)
    return sums.view(batch, num_clusters + 1, -1)[:, :num_clusters]


class _LloydStep:
    """The two halves of a Lloyd iteration over fixed tokens ``x`` :math:`(B, N, C)`.

    What does not change between iterations is made once: the tokens with a column of
    ones, stacked (one ``index_add`` then gives every cluster's sum and its size), the
    per-image row offset and whether an export is running. At 196 tokens an iteration
    is ten operators of a few microseconds each, so the Python between them counts.
    """

    def __init__(self, x: Tensor, num_clusters: int, valid: Optional[Tensor]):
        batch, num_tokens, channels = x.shape
        self.x = x
        self.num_clusters = num_clusters
        self.padding = None if valid is None else ~valid
        self.export = exporting()
        counted = F.pad(x, (0, 1), value=1.0)
        self.counted = counted if self.export else counted.view(-1, channels + 1)
        self.offset = row_offsets(batch, num_clusters + 1, x.device)

    def assign(self, centroids: Tensor) -> Tensor:
        """Nearest centroid of every token: argmin over clusters of ||c||^2 - 2 x.c
        (||x||^2 is the same for every cluster of a token, so it is left out)."""
        if self.export:  # ONNX has no vecdot; square + sum: the same values, two operators
            norms = centroids.square().sum(-1)
        else:
            norms = torch.linalg.vecdot(centroids, centroids)
        labels = torch.baddbmm(norms.unsqueeze(1), self.x, centroids.transpose(1, 2),
                               alpha=-2).argmin(-1)
        if self.padding is not None:
            labels = labels.masked_fill(self.padding, self.num_clusters)
        return labels

    def update(self, labels: Tensor, centroids: Tensor) -> Tensor:
        """Mean of every cluster's tokens; an empty cluster keeps its previous centroid
        rather than collapsing to zero (its 0 / 0 is discarded)."""
        if self.export:
            sums = cluster_sums(self.counted, labels, self.num_clusters)
        else:
            sums = _scatter_sums(self.counted, labels, self.offset, self.num_clusters)
        sizes = sums[..., -1:]  # counts: nonzero is non-empty
        return torch.where(sizes.bool(), sums[..., :-1] / sizes, centroids)


@torch.no_grad()
def partition(x: Tensor,
              num_clusters: int,
              max_iters: int = 20,
              init: str = 'grid',
              tol: Optional[float] = 0.0,
              valid: Optional[Tensor] = None,
              sync_free: bool = False) -> Partition:
    """Batched k-means (Lloyd) over the tokens of each image, no gradient.

    Every image is clustered on its own: no statistic is shared across the batch, so an
    image's partition never depends on the other images. The arithmetic runs in float32
    whatever the input dtype and whatever autocast is on (distances in half precision
    overflow and reorder near ties): the labels are those of a float32 run on ``x``.

    Args:
        x (Tensor): :math:`(B, N, C)` token features.
        num_clusters (int): :math:`\\kappa`, clusters per image. When it exceeds ``N``
            the surplus clusters stay empty.
        max_iters (int): at most this many Lloyd iterations (the paper uses 20).
        init (str): ``'grid'`` (deterministic, default) or ``'random'`` (the paper's).
        tol (float, optional): stop early once no centroid of any image moved by more
            than ``tol`` (squared L2). ``0`` (default) stops at the exact fixed point, when
            no label changed, which is the result full iterations would give, so batch
            independence holds; ``None`` always runs ``max_iters``.
        valid (BoolTensor, optional): :math:`(B, N)` False for batch padding: those
            tokens take no part and are labelled ``kappa``.
        sync_free (bool): never read a value back to the host: always run ``max_iters``
            iterations (a fixed point stays one, so ``tol=0`` gives the same labels) and
            freeze each image once it meets ``tol > 0``. For GPUs and compilation.

    Returns:
        Partition: labels :math:`(B, N)`, cluster sizes :math:`(B, \\kappa)`, iterations.
    """
    x = x.detach().float().contiguous()  # one copy here, not one per matmul below
    num_clusters_eff = min(num_clusters, x.shape[1])
    with full_precision(x):
        centroids = _init_centroids(x, num_clusters_eff, init, valid)
        labels, iters = _lloyd(x, centroids, valid, max_iters, tol, sync_free)
    if num_clusters_eff < num_clusters:  # padding is labelled kappa, not kappa_eff
        labels = labels.masked_fill(labels == num_clusters_eff, num_clusters)
    counts = one_hot_clusters(labels, num_clusters, torch.long).sum(1)
    return Partition(labels, counts, iters)


def _lloyd(x: Tensor, centroids: Tensor, valid: Optional[Tensor], max_iters: int, tol,
           sync_free: bool):
    """Lloyd iterations from ``centroids``; returns the labels and the iteration count.

    Eager with ``tol`` 0 or None, the count is a Python int and the loop ends at the
    exact fixed point (one ``torch.equal`` per iteration; a fixed point would stay one),
    with no other operator per iteration: at 196 tokens the operators are the cost.
    Otherwise see :func:`_lloyd_per_image`.
    """
    if sync_free or tol:
        return _lloyd_per_image(x, centroids, valid, max_iters, tol, sync_free)
    step = _LloydStep(x, centroids.shape[1], valid)
    labels = step.assign(centroids)
    iters = 0
    for iters in range(1, max_iters + 1):
        centroids = step.update(labels, centroids)
        new_labels = step.assign(centroids)
        converged = tol is not None and torch.equal(new_labels, labels)
        labels = new_labels
        if converged:
            break
    return labels, torch.tensor(iters, device=x.device)


def _lloyd_per_image(x: Tensor, centroids: Tensor, valid: Optional[Tensor], max_iters: int,
                     tol, sync_free: bool):
    """Lloyd iterations with the bookkeeping in tensors.

    With ``tol > 0`` an image whose centroids moved by at most ``tol`` keeps them (and
    its labels) from then on, so each image stops on its own. Without ``sync_free`` the
    loop ends once no image moves (one host read per iteration); with it, all
    ``max_iters`` run and the count stays a tensor.
    """
    step = _LloydStep(x, centroids.shape[1], valid)
    labels = step.assign(centroids)
    iters = torch.zeros((), dtype=torch.long, device=x.device)
    running = torch.ones((), dtype=torch.bool, device=x.device)
    for _ in range(max_iters):
        new = step.update(labels, centroids)
        new_labels = step.assign(new)
        iters = iters + running
        if tol is None:
            moving = running
        elif tol > 0:
            moving = (new - centroids).square().sum(-1).amax(1) > tol  # (B,)
            new = torch.where(moving.view(-1, 1, 1), new, centroids)
            new_labels = torch.where(moving.view(-1, 1), new_labels, labels)
        else:  # sync-free, exact fixed point
            moving = (new_labels != labels).any(1)
        centroids, labels = new, new_labels
        running = running & moving.any()
        if not sync_free and not bool(running):
            break
    return labels, iters
