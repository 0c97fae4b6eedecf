"""Norm + activation of a :class:`~mmcv.cnn.ConvModule` that keeps only its input for
the backward.

In training, ``act(bn(h))`` keeps two tensors the size of ``h`` until the backward: ``h``
for the BN and ``bn(h)`` for the activation. For the FFN's 4C hidden layer and the
G-GCN's 2C output that is a third of the activation memory of a ClusterViG block. Here
only ``h`` is kept; the backward recomputes ``bn(h)`` from it (with the same batch
statistics) and differentiates the recomputation. Running statistics are updated once,
in the forward.
"""
import torch
import torch.nn.functional as F
from mmcv.cnn import ConvModule
from torch import Tensor, nn


def _elementwise(act: nn.Module, h: Tensor) -> Tensor:
    """``act(h)`` over ``h``'s memory as one flat run: torch's elementwise kernels walk a
    channels-last 4-d map about half as fast as the same memory flat (GELU over a
    1280-channel map on the CPU)."""
    if h.dim() == 4 and not h.is_contiguous() and h.is_contiguous(
            memory_format=torch.channels_last):
        nhwc = h.permute(0, 2, 3, 1)
        return act(nhwc.reshape(-1)).view(nhwc.shape).permute(0, 3, 1, 2)
    return act(h)


class _RecomputedNormAct(torch.autograd.Function):
    """``act(norm(h))`` saving ``h`` (and the affine parameters) only."""

    @staticmethod
    def forward(ctx, h: Tensor, weight: Tensor, bias: Tensor, norm: nn.BatchNorm2d,
                act: nn.Module) -> Tensor:
        ctx.eps, ctx.act = norm.eps, act
        ctx.save_for_backward(h, weight, bias)
        return _elementwise(act, norm(h))  # the module's BN: running statistics move once

    @staticmethod
    def backward(ctx, grad: Tensor):
        saved = ctx.saved_tensors
        needs = ctx.needs_input_grad[:3]
        with torch.enable_grad():
            h, weight, bias = (t.detach().requires_grad_(need) for t, need in zip(saved, needs))
            # Batch statistics of h again; no running statistics to update.
            out = _elementwise(ctx.act, F.batch_norm(h, None, None, weight, bias, True, 0.0,
                                                     ctx.eps))
        wanted = [t for t, need in zip((h, weight, bias), needs) if need]
        grads = iter(torch.autograd.grad(out, wanted, grad))
        return (*(next(grads) if need else None for need in needs), None, None)


def _recomputable(norm: nn.Module, act: nn.Module, h: Tensor) -> bool:
    """Plain affine BN in training (SyncBN's statistics span processes; an eval BN saves
    nothing worth recomputing) followed by an activation, with a gradient to compute."""
    return (type(norm) is nn.BatchNorm2d and norm.training and norm.affine
            and act is not None and torch.is_grad_enabled() and h.requires_grad)


def norm_act(module: ConvModule, h: Tensor) -> Tensor:
    """``module``'s norm and activation applied to ``h``, its convolution's output.

    Args:
        module (ConvModule): in the default ``('conv', 'norm', 'act')`` order, with
            the convolution's own zero padding.
        h (Tensor): :math:`(B, C, H, W)` output of ``module.conv``.
    """
    if module.order != ('conv', 'norm', 'act'):
        raise ValueError(f'norm_act needs a ConvModule ordered conv, norm, act; got '
                         f'{module.order}')
    if module.with_explicit_padding:  # its padding layer runs before module.conv
        raise ValueError('norm_act needs a ConvModule whose conv pads itself (zeros)')
    norm = module.norm if module.with_norm else None
    act = module.activate if module.with_activation else None
    if _recomputable(norm, act, h):
        return _RecomputedNormAct.apply(h, norm.weight, norm.bias, norm, act)
    if norm is not None:
        h = norm(h)
    return _elementwise(act, h) if act is not None else h


def conv_norm_act(module: ConvModule, x: Tensor) -> Tensor:
    """``module(x)``, keeping only the convolution's output for the norm and activation's
    backward (see :func:`norm_act`)."""
    return norm_act(module, module.conv(x))
