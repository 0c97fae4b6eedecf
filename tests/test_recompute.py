"""Gradient checkpointing (``with_cp=True``) reuses the forward's partitions and graphs
in the backward's recomputation (issue 18)."""
import torch

from mmcvig.models import ClusterViG
from mmcvig.models.degc import degc

ARCH = dict(num_blocks=3, channels=32, num_clusters=4, groups=1, stride=16)


def count_calls(monkeypatch, name):
    """Count the calls of ``degc.<name>`` (k-means or the k-NN) made by DEGC."""
    calls = []
    original = getattr(degc, name)

    def counted(*args, **kwargs):
        calls.append(name)
        return original(*args, **kwargs)

    monkeypatch.setattr(degc, name, counted)
    return calls


def training_step(with_cp, images, weight):
    torch.manual_seed(0)
    model = ClusterViG(ARCH, with_cp=with_cp, kmeans_init='random').train()
    out = model(images)[0]
    (out * weight).sum().backward()
    return out, {name: param.grad for name, param in model.named_parameters()}


def test_checkpointed_step_partitions_once_per_block(monkeypatch):
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(2, 3, 96, 80, generator=gen, requires_grad=True)
    weight = torch.randn(2, 32, 6, 5, generator=gen)
    out, grads = training_step(False, images, weight)
    kmeans = count_calls(monkeypatch, 'partition')
    knn = count_calls(monkeypatch, 'build_graph')
    out_cp, grads_cp = training_step(True, images, weight)
    assert len(kmeans) == len(knn) == ARCH['num_blocks']
    torch.testing.assert_close(out_cp, out)
    for name, grad in grads.items():
        torch.testing.assert_close(grads_cp[name], grad, msg=name)


def test_forward_without_backward_leaves_nothing_behind():
    """A checkpointed forward whose backward never runs (an evaluation with gradients
    on) does not make a later forward replay stale graphs."""
    model = ClusterViG(ARCH, with_cp=True).train()
    images = torch.randn(1, 3, 64, 64, requires_grad=True)
    model(images)
    out = model(images)[0]
    out.sum().backward()
    assert images.grad is not None
