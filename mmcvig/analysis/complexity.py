"""Parameter and MAC counts, with the paper's counting rule and a full one.

The paper's GMACs (Table III) count the convolutions of the network only: stem, CPE,
FC1/FC2, FFN and head convolutions. They leave out the G-GCN MLP (implemented there as
a PyG linear layer), GATv2, k-NN and k-means. :func:`count_conv_macs` applies exactly
that rule; :func:`count_full_macs` counts every operator mmengine's ``FlopAnalyzer``
knows (convolutions, the G-GCN MLP, matmuls of k-means/k-NN/GATv2, ...).
"""
from typing import Sequence

import torch
from mmengine.analysis import FlopAnalyzer
from torch import nn

from ..models.degc import GGCN


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _paper_counted_convs(model: nn.Module):
    """Every (transposed) 2-d convolution of ``model`` except those inside a G-GCN."""
    skip = {id(m) for g in model.modules() if isinstance(g, GGCN) for m in g.modules()}
    convs = (nn.Conv2d, nn.ConvTranspose2d)
    return [m for m in model.modules() if isinstance(m, convs) and id(m) not in skip]


@torch.no_grad()
def count_conv_macs(model: nn.Module, inputs: Sequence[torch.Tensor]) -> int:
    """MACs of the convolutions the paper counts, for one forward of ``inputs``.

    A convolution costs ``out_elements * in_channels / groups * kh * kw`` (bias free); a
    transposed one ``in_elements * out_channels / groups * kh * kw`` (every input element
    is spread over a kernel of every output channel).
    """
    total = 0

    def hook(conv, inputs, out):
        nonlocal total
        kh, kw = conv.kernel_size
        if isinstance(conv, nn.ConvTranspose2d):
            total += inputs[0].numel() * conv.out_channels // conv.groups * kh * kw
        else:
            total += out.numel() * conv.in_channels // conv.groups * kh * kw

    handles = [m.register_forward_hook(hook) for m in _paper_counted_convs(model)]
    try:
        model(*inputs)
    finally:
        for h in handles:
            h.remove()
    return total


@torch.no_grad()
def count_full_macs(model: nn.Module, inputs: Sequence[torch.Tensor]) -> int:
    """MACs of every operator mmengine's FlopAnalyzer handles (it counts MACs as flops)."""
    analyzer = FlopAnalyzer(model, tuple(inputs))
    analyzer.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    return analyzer.total()
