"""What DEGC computed on an input, block by block, for drawing and inspection."""
from typing import Dict, Sequence

import torch
from torch import Tensor

from ..models import ClusterViG
from ..models.degc import Graph


def partition_records(model: ClusterViG, x: Tensor, blocks: Sequence[int],
                      image: int = 0) -> Dict[int, dict]:
    """Partition and k-NN graph of one image in the chosen blocks, from one forward.

    They come from ``model(x, return_intermediates=True)``: what the forward computed,
    nothing recomputed.

    Args:
        model (ClusterViG): the backbone (dense graph path).
        x (Tensor): :math:`(B, 3, H, W)` images.
        blocks (Sequence[int]): block indices (non-negative).
        image (int): which image of the batch.

    Returns:
        dict: per block, ``grid`` (token rows, cols), ``labels`` :math:`(N,)`, ``counts``
        :math:`(\\kappa,)`, ``neighbors`` and ``valid`` :math:`(N, K)` and ``k``.
    """
    with torch.no_grad():
        _, intermediates = model(x, return_intermediates=True)
    stride = model.arch['stride']
    # Every stride-2 stem convolution (3x3, padding 1) rounds up.
    grid = tuple(-(-size // stride) for size in x.shape[-2:])
    records = {}
    for index in blocks:
        part, graph, _ = intermediates[index]
        if not isinstance(graph, Graph):
            raise ValueError("only the dense graph (graph_impl='dense') has K slots per "
                             'token to draw')
        records[index] = dict(grid=grid, labels=part.labels[image],
                              counts=part.counts[image], neighbors=graph.neighbors[image],
                              valid=graph.valid[image], k=graph.neighbors.shape[-1])
    return records
