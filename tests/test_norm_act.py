"""The recomputing norm + activation against the ConvModule it stands in for."""
import pytest
import torch
from mmcv.cnn import ConvModule

from mmcvig.models.layers import conv_norm_act


def twin_modules():
    """Two ConvModules (conv, BN, GELU) with the same weights, in training mode."""
    torch.manual_seed(0)
    ref = ConvModule(6, 8, 1, norm_cfg=dict(type='BN'), act_cfg=dict(type='GELU'))
    torch.nn.init.normal_(ref.norm.weight)  # BN affine off its defaults
    torch.nn.init.normal_(ref.norm.bias)
    ours = ConvModule(6, 8, 1, norm_cfg=dict(type='BN'), act_cfg=dict(type='GELU'))
    ours.load_state_dict(ref.state_dict())
    return ref.train(), ours.train()


@pytest.mark.parametrize('channels_last', [False, True])
def test_values_gradients_and_running_stats_equal_convmodule(channels_last):
    ref, ours = twin_modules()
    x = torch.randn(3, 6, 5, 7)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    grad = torch.randn(3, 8, 5, 7)
    x_ref, x_ours = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_ref, out_ours = ref(x_ref), conv_norm_act(ours, x_ours)
    torch.testing.assert_close(out_ours, out_ref)
    (out_ref * grad).sum().backward()
    (out_ours * grad).sum().backward()
    torch.testing.assert_close(x_ours.grad, x_ref.grad)
    for (name, p_ref), p_ours in zip(ref.named_parameters(), ours.parameters()):
        torch.testing.assert_close(p_ours.grad, p_ref.grad, msg=name)
    # The running statistics moved once, as the module's own forward moves them.
    for name, buf in ref.norm.named_buffers():
        torch.testing.assert_close(getattr(ours.norm, name), buf, msg=name)


def test_keeps_only_the_conv_output():
    """Two (B, C, H, W) tensors stay alive for the backward of conv -> BN -> GELU in a
    ConvModule (BN input and output); one with conv_norm_act."""
    def saved_elements(fn, module):
        x = torch.randn(2, 6, 16, 16, requires_grad=True)
        sizes = []

        def pack(t):
            sizes.append(t.numel())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            fn(module, x)
        return sum(s for s in sizes if s == 2 * 8 * 16 * 16)

    ref, ours = twin_modules()
    assert saved_elements(lambda m, x: m(x), ref) == 2 * (2 * 8 * 16 * 16)
    assert saved_elements(conv_norm_act, ours) == 2 * 8 * 16 * 16


def test_eval_and_no_grad_take_the_plain_path():
    ref, ours = twin_modules()
    x = torch.randn(2, 6, 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(conv_norm_act(ours, x), ref(x))
    ref.eval(), ours.eval()
    torch.testing.assert_close(conv_norm_act(ours, x.requires_grad_()), ref(x))


def test_refuses_another_order():
    module = ConvModule(4, 4, 1, norm_cfg=dict(type='BN'), order=('norm', 'conv', 'act'))
    with pytest.raises(ValueError, match='ordered conv, norm, act'):
        conv_norm_act(module, torch.randn(1, 4, 2, 2))


def test_refuses_a_padding_layer_before_the_conv():
    module = ConvModule(4, 4, 3, padding=1, padding_mode='reflect', norm_cfg=dict(type='BN'))
    with pytest.raises(ValueError, match='pads itself'):
        conv_norm_act(module, torch.randn(1, 4, 5, 5))
