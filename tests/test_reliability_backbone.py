"""Degenerate and bad input, mixed precision: the backbone alone."""
import pytest
import torch

from mmcvig.models import ClusterViG

MINI = dict(num_blocks=3, channels=32, num_clusters=4, groups=2, stride=16)


@pytest.fixture(scope='module')
def model():
    torch.manual_seed(0)
    return ClusterViG(MINI, out_indices=(0, 2)).eval()


@pytest.mark.parametrize('name,images', [
    ('constant', torch.full((2, 3, 64, 64), 0.7)),
    ('zeros', torch.zeros(2, 3, 48, 80)),
    ('16x16 (1 token < kappa, K)', torch.randn(2, 3, 16, 16)),
    ('32x32 (4 tokens < K)', torch.randn(2, 3, 32, 32)),
    ('batch 1, odd size', torch.randn(1, 3, 77, 51)),
    ('batch 64', torch.randn(64, 3, 32, 48)),
])
def test_degenerate_inputs_give_finite_outputs(model, name, images):
    with torch.no_grad():
        outs = model(images)
    h, w = (-(-s // 16) for s in images.shape[-2:])
    for out in outs:
        assert out.shape == (images.shape[0], 32, h, w), name
        assert torch.isfinite(out).all(), name


def test_degenerate_inputs_train_mode_backward():
    model = ClusterViG(MINI).train()
    out = model(torch.zeros(2, 3, 32, 32))[0]
    out.sum().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize('bad', [float('nan'), float('inf')])
def test_non_finite_input_is_refused(model, bad):
    images = torch.randn(2, 3, 32, 32)
    images[1, 0, 3, 4] = bad
    with pytest.raises(ValueError, match='NaN or Inf'):
        model(images)


@pytest.mark.parametrize('bad', [float('nan'), float('inf')])
def test_non_finite_image_sync_free_spoils_only_itself(model, bad):
    """Sync-free there is no check (it would read back to the host, and a device-side
    assertion kills a CUDA context): the bad image's features are non-finite, the
    others' are what they get alone, and nothing raises."""
    images = torch.randn(2, 3, 64, 48)
    alone = model(images[:1])
    images[1, 0, 3, 4] = bad
    sync_free = ClusterViG(MINI, out_indices=(0, 2), sync_free=True).eval()
    sync_free.load_state_dict(model.state_dict())
    with torch.no_grad():
        outs = sync_free(images)
    for out, out_alone in zip(outs, alone):
        assert not torch.isfinite(out[1]).all()
        torch.testing.assert_close(out[:1], out_alone, rtol=1e-5, atol=1e-5)


def test_wrong_input_shape_is_refused(model):
    with pytest.raises(ValueError, match=r'\(B, 3, H, W\)'):
        model(torch.randn(2, 1, 32, 32))


def test_bf16_autocast_forward_backward():
    torch.manual_seed(0)
    model = ClusterViG(MINI).train()
    images = torch.randn(2, 3, 64, 64)
    dtypes = []
    model.blocks[0][1].fc1.conv.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = model(images)[0]
    assert dtypes == [torch.bfloat16]  # autocast really ran the convolutions in bf16
    assert torch.isfinite(out.float()).all()
    out.float().square().mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
