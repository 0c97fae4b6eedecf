"""What the authors' trained models compute where the paper is silent: DEGC on per-image
centred tokens, centroids without gradient into the tokens (issue 17)."""
import pytest
import torch

from mmcvig.models import ClusterViG
from mmcvig.models.degc import DEGC, centroid_attention, degc
from mmcvig.models.degc.degc import image_means


def degc_pair(**kwargs):
    """Two DEGCs with the same weights, centring on and off, in eval mode; BN affine
    and running statistics moved off their defaults so every weight matters."""
    torch.manual_seed(0)
    centred = DEGC(16, num_clusters=4, k=7, **kwargs)
    for name, value in centred.state_dict().items():
        if value.is_floating_point() and value.dim() == 1:
            value.copy_(torch.rand_like(value) + 0.5)
    plain = DEGC(16, num_clusters=4, k=7, center_tokens=False, **kwargs)
    plain.load_state_dict(centred.state_dict())
    return centred.eval(), plain.eval()


def shifted_maps(gen, batch=2):
    """Token maps far from zero mean (an offset per image and channel), as fc1 gives."""
    offset = 3 * torch.randn(batch, 16, 1, 1, generator=gen)
    return torch.randn(batch, 16, 7, 9, generator=gen) + offset


@pytest.mark.parametrize('graph_impl', ['dense', 'sparse'])
@pytest.mark.parametrize('dtype,tol', [(torch.float32, 1e-5), (torch.float64, 1e-12)])
def test_centred_degc_is_plain_degc_of_centred_tokens(graph_impl, dtype, tol):
    """Float64 stays float64 in the mean, the k-NN and the centroids: a parity check
    against the authors' code runs in float64 and must agree to 1e-10."""
    gen = torch.Generator().manual_seed(1)
    x = shifted_maps(gen).to(dtype)
    centred, plain = (module.to(dtype) for module in degc_pair(graph_impl=graph_impl))
    by_hand = x - x.mean((2, 3), keepdim=True)
    out, inter = centred(x, return_intermediates=True)
    expected, inter_hand = plain(by_hand, return_intermediates=True)
    torch.testing.assert_close(out, expected, rtol=10 * tol, atol=tol)
    assert torch.equal(inter.partition.labels, inter_hand.partition.labels)
    # The comparison can fail: the plain DEGC is not blind to the mean.
    assert not torch.allclose(plain(x), expected, rtol=1e-2, atol=1e-2)


def test_centring_keeps_the_partition():
    gen = torch.Generator().manual_seed(2)
    x = shifted_maps(gen, batch=4)
    centred, plain = degc_pair()
    _, inter = centred(x, return_intermediates=True)
    _, inter_plain = plain(x, return_intermediates=True)
    assert torch.equal(inter.partition.labels, inter_plain.partition.labels)


def test_no_gradient_through_the_mean():
    """The gradient passes the subtraction as if it were not there (the authors subtract
    in place under ``no_grad``)."""
    gen = torch.Generator().manual_seed(3)
    x = shifted_maps(gen).requires_grad_()
    by_hand = (x - x.mean((2, 3), keepdim=True)).detach().requires_grad_()
    centred, plain = degc_pair()
    weight = torch.randn(2, 32, 7, 9, generator=gen)
    (centred(x) * weight).sum().backward()
    (plain(by_hand) * weight).sum().backward()
    torch.testing.assert_close(x.grad, by_hand.grad, rtol=1e-4, atol=1e-5)


def test_image_means_exclude_padding_to_the_last_bit():
    gen = torch.Generator().manual_seed(4)
    alone = torch.randn(1, 5, 6, 8, generator=gen) + 2
    padded = torch.zeros(2, 9, 7, 8)
    padded[0, :5, :6] = alone[0]
    padded[1] = torch.randn(9, 7, 8, generator=gen)
    valid = torch.zeros(2, 9, 7, dtype=torch.bool)
    valid[0, :5, :6] = True
    valid[1] = True
    mean_alone = image_means(alone.flatten(1, 2))
    mean_padded = image_means(padded.flatten(1, 2), valid.flatten(1))
    assert torch.equal(mean_alone[0], mean_padded[0])
    torch.testing.assert_close(mean_alone[0, 0], alone[0].mean((0, 1)))
    torch.testing.assert_close(mean_padded[1, 0], padded[1].mean((0, 1)))


def test_image_means_in_float32_for_half_tokens():
    """4,200 half-precision tokens of scale 30 sum past float16's range (65,504)."""
    tokens = torch.full((1, 4200, 8), 30.0, dtype=torch.float16)
    mean = image_means(tokens)
    assert mean.dtype == torch.float32
    torch.testing.assert_close(mean, torch.full((1, 1, 8), 30.0))


def test_centred_degc_alone_and_padded_agree():
    gen = torch.Generator().manual_seed(5)
    centred, _ = degc_pair()
    alone = shifted_maps(gen, batch=1)[:, :, :5, :6]
    padded = torch.zeros(2, 16, 7, 9)
    padded[0, :, :5, :6] = alone[0]
    padded[1] = shifted_maps(gen, batch=1)[0]
    valid = torch.zeros(2, 7, 9, dtype=torch.bool)
    valid[0, :5, :6] = True
    valid[1] = True
    out_alone, inter_alone = centred(alone, return_intermediates=True)
    out_padded, inter_padded = centred(padded, valid.flatten(1), return_intermediates=True)
    torch.testing.assert_close(out_padded[:1, :, :5, :6], out_alone, rtol=1e-5, atol=1e-6)
    labels_padded = inter_padded.partition.labels[0].view(7, 9)[:5, :6]
    assert torch.equal(labels_padded.flatten(), inter_alone.partition.labels[0])


def hand_detached_means(monkeypatch):
    """``cluster_means`` with its result detached by hand, in the module DEGC calls."""
    means = centroid_attention.cluster_means
    monkeypatch.setattr(degc, 'cluster_means', lambda x, part: means(x, part).detach())


def token_grad(module, x, weight):
    x = x.clone().requires_grad_()
    (module(x) * weight).sum().backward()
    return x.grad


def test_centroids_carry_no_gradient_into_the_tokens(monkeypatch):
    gen = torch.Generator().manual_seed(6)
    x = shifted_maps(gen)
    weight = torch.randn(2, 32, 7, 9, generator=gen)
    detached, _ = degc_pair()
    attached, _ = degc_pair(detach_centroids=False)
    grad_default = token_grad(detached, x, weight)
    grad_attached = token_grad(attached, x, weight)
    assert detached.global_update.lin_l.weight.grad.abs().sum() > 0  # GATv2 still learns
    hand_detached_means(monkeypatch)
    grad_by_hand = token_grad(attached, x, weight)
    torch.testing.assert_close(grad_default, grad_by_hand)
    # Through z the tokens do get a gradient when it is not detached.
    assert not torch.allclose(grad_attached, grad_by_hand, rtol=1e-3, atol=1e-5)


def test_backbone_options_reach_every_degc():
    model = ClusterViG(dict(num_blocks=2, channels=32, num_clusters=2, groups=1, stride=16))
    assert all(b[0].degc.center_tokens and b[0].degc.detach_centroids for b in model.blocks)
    model = ClusterViG(dict(num_blocks=2, channels=32, num_clusters=2, groups=1, stride=16),
                       center_tokens=False, detach_centroids=False)
    assert not any(b[0].degc.center_tokens or b[0].degc.detach_centroids
                   for b in model.blocks)
