"""Step (i) of DEGC: partition every image's tokens with batched k-means."""
from typing import NamedTuple, Optional

import torch
from torch import Tensor

KMEANS_INITS = ('grid', 'random')


class Partition(NamedTuple):
    """Result of :func:`partition`.

    Attributes:
        labels (LongTensor): :math:`(B, N)` cluster of every token, in ``[0, kappa)``.
        counts (LongTensor): :math:`(B, \\kappa)` tokens per cluster; may hold zeros.
    """
    labels: Tensor
    counts: Tensor


def _init_centroids(x: Tensor, num_clusters: int, init: str) -> Tensor:
    """Pick ``num_clusters`` tokens of every image as initial centroids.

    ``grid`` takes tokens evenly spaced in raster order, so the result depends on the
    image only (eval is deterministic and batch independent); ``random`` is the paper's
    single random initialisation.
    """
    batch, num_tokens, _ = x.shape
    if init == 'grid':
        # Centre of each of num_clusters equal raster segments.
        idx = (torch.arange(num_clusters, device=x.device) * 2 + 1) * num_tokens
        idx = (idx // (2 * num_clusters)).expand(batch, -1)
    elif init == 'random':
        idx = torch.rand(batch, num_tokens, device=x.device).argsort(dim=1)[:, :num_clusters]
    else:
        raise ValueError(f'Unknown k-means init {init!r}; expected one of {KMEANS_INITS}')
    return x.gather(1, idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def _assign(x: Tensor, centroids: Tensor) -> Tensor:
    """Nearest centroid of every token: argmin over clusters of ||c||^2 - 2 x.c
    (||x||^2 is the same for every cluster of a token, so it is left out)."""
    scores = torch.baddbmm(centroids.square().sum(-1).unsqueeze(1), x, centroids.transpose(1, 2),
                           alpha=-2)
    return scores.argmin(dim=-1)


def _cluster_sums(x: Tensor, labels: Tensor, num_clusters: int):
    """Per-cluster feature sums :math:`(B, \\kappa, C)` and sizes :math:`(B, \\kappa)`."""
    one_hot = torch.nn.functional.one_hot(labels, num_clusters).to(x.dtype)
    return one_hot.transpose(1, 2) @ x, one_hot.sum(1)


def _converged(tol, labels, new_labels, centroids, new_centroids) -> bool:
    """Early-stop test of :func:`partition` (see its ``tol``)."""
    if tol is None:
        return False
    if tol == 0:  # a fixed point: the next update would give the same centroids again
        return torch.equal(new_labels, labels)
    return bool((new_centroids - centroids).square().sum(-1).max() <= tol)


@torch.no_grad()
def partition(x: Tensor,
              num_clusters: int,
              max_iters: int = 20,
              init: str = 'grid',
              tol: Optional[float] = 0.0) -> Partition:
    """Batched k-means (Lloyd) over the tokens of each image, no gradient.

    Every image is clustered on its own: no statistic is shared across the batch, so an
    image's partition never depends on the other images. The arithmetic runs in float32
    whatever the input dtype (distances in half precision reorder near ties).

    Args:
        x (Tensor): :math:`(B, N, C)` token features.
        num_clusters (int): :math:`\\kappa`, clusters per image. When it exceeds ``N``
            the surplus clusters stay empty.
        max_iters (int): at most this many Lloyd iterations (the paper uses 20).
        init (str): ``'grid'`` (deterministic, default) or ``'random'`` (the paper's).
        tol (float, optional): stop early once no centroid of any image moved by more
            than ``tol`` (squared L2). ``0`` (default) stops at the exact fixed point, when
            no label changed, which is the result full iterations would give, so batch
            independence holds; ``None`` always runs ``max_iters`` (static control flow,
            e.g. for export).

    Returns:
        Partition: labels :math:`(B, N)` and cluster sizes :math:`(B, \\kappa)`.
    """
    x = x.detach().float().contiguous()  # one copy here, not one per matmul below
    num_clusters_eff = min(num_clusters, x.shape[1])
    centroids = _init_centroids(x, num_clusters_eff, init)
    labels = _assign(x, centroids)
    for _ in range(max_iters):
        sums, sizes = _cluster_sums(x, labels, num_clusters_eff)
        # An empty cluster keeps its previous centroid rather than collapsing to zero.
        new = torch.where(sizes.unsqueeze(-1) > 0, sums / sizes.clamp(min=1).unsqueeze(-1),
                          centroids)
        new_labels = _assign(x, new)
        stop = _converged(tol, labels, new_labels, centroids, new)
        centroids, labels = new, new_labels
        if stop:
            break
    counts = torch.nn.functional.one_hot(labels, num_clusters).sum(1)
    return Partition(labels, counts)
