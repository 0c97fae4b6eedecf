"""Step (iii) of DEGC, ``global_update``: partition centroids updated with GATv2 (paper
Eq. 2-3)."""
import torch
import torch.nn.functional as F
from mmengine.model import BaseModule
from torch import Tensor, nn

from .execution import static_shapes
from .kmeans import Partition, cluster_sums


def cluster_means(x: Tensor, part: Partition) -> Tensor:
    """Centroid :math:`z_i` of every partition (mean of its tokens), with gradient.

    Args:
        x (Tensor): :math:`(B, N, C)` token features.
        part (Partition): the partition of ``x``.

    Returns:
        Tensor: :math:`(B, \\kappa, C)`; zeros for empty clusters. Padding tokens count
        in none, and an image's sums do not depend on them (see :func:`cluster_sums`).
    """
    sums = cluster_sums(x, part.labels, part.counts.shape[1])
    return sums / part.counts.clamp(min=1).unsqueeze(-1).to(x.dtype)


def _per_image_linear(linear: nn.Linear, z: Tensor) -> Tensor:
    """``linear(z)`` for :math:`(B, \\kappa, C)` centroids, one image at a time.

    A GEMM's rounding depends on how many rows it multiplies at once (and a batched
    GEMM's on the batch), so ``linear(z)`` of an image's centroids would change in the
    last bits with the size of its batch, and the next k-means turns such bits into
    other labels at near-ties. One GEMM of :math:`\\kappa` rows per image always has the
    same shape. (An elementwise product and sum, also batch-invariant, materialises
    :math:`B \\kappa C^2` floats: 52 MB and 15 ms per call for CViG-S at batch 32.)
    Traced or compiled graphs, which must hold for any batch, take one GEMM.
    """
    if static_shapes():
        return linear(z)
    return torch.stack([linear(image) for image in z])


class GlobalUpdate(BaseModule):
    r"""One GATv2 layer (one head) over the complete centroid graph of each image.

    .. math::
        \alpha_{ji} = \operatorname{softmax}_j\big(\mathbf{a}^\top
            \operatorname{LeakyReLU}(\mathrm{LIN}_R(z_i) + \mathrm{LIN}_L(z_j))\big),
        \qquad z'_i = \sum_j \alpha_{ji} \mathrm{LIN}_L(z_j) + b

    with the complete graph including self loops, over the non-empty partitions only.
    Same parameters and math as ``torch_geometric.nn.GATv2Conv(C, C', heads=1,
    negative_slope=0.2)`` (``lin_l``, ``lin_r``, ``att``, ``bias``), evaluated densely:
    with :math:`\kappa \le 6` a :math:`\kappa \times \kappa` score matrix is cheaper
    than any edge list.

    Args:
        in_channels (int): :math:`C`.
        out_channels (int): :math:`C'`; defaults to ``in_channels``.
        negative_slope (float): LeakyReLU slope.
    """

    def __init__(self, in_channels: int, out_channels: int = None, negative_slope: float = 0.2,
                 init_cfg=None):
        super().__init__(init_cfg)
        out_channels = out_channels or in_channels
        self.negative_slope = negative_slope
        self.lin_l = nn.Linear(in_channels, out_channels)
        self.lin_r = nn.Linear(in_channels, out_channels)
        self.att = nn.Parameter(torch.empty(out_channels))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.reset_parameters()

    def reset_parameters(self):
        """Glorot weights, zero biases, as PyG initialises GATv2Conv."""
        for lin in (self.lin_l, self.lin_r):
            nn.init.xavier_uniform_(lin.weight)
            nn.init.zeros_(lin.bias)
        nn.init.xavier_uniform_(self.att.view(1, -1))
        nn.init.zeros_(self.bias)

    def forward(self, z: Tensor, present: Tensor) -> Tensor:
        """
        Args:
            z (Tensor): :math:`(B, \\kappa, C)` centroids.
            present (BoolTensor): :math:`(B, \\kappa)` False for empty partitions, which
                send no message (their own output is computed but never used).

        Returns:
            Tensor: :math:`(B, \\kappa, C')` updated centroids :math:`z'`.
        """
        source, target = _per_image_linear(self.lin_l, z), _per_image_linear(self.lin_r, z)
        pair = F.leaky_relu(target.unsqueeze(2) + source.unsqueeze(1), self.negative_slope)
        score = (pair * self.att).sum(-1).masked_fill(~present.unsqueeze(1), float('-inf'))
        alpha = score.softmax(dim=-1)  # (B, kappa, kappa)
        # Weighted sum elementwise (B kappa^2 C floats): a batched matmul's rounding may
        # depend on the batch.
        return (alpha.unsqueeze(-1) * source.unsqueeze(1)).sum(2) + self.bias
