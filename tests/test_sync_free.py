"""The sync-free forward: no host-device synchronisation inside the backbone."""
import pytest
import torch

from mmcvig.analysis import HostSyncCounter
from mmcvig.models import ClusterViG

MINI = dict(num_blocks=3, channels=32, num_clusters=3, groups=2, stride=16)


def padded_batch(gen):
    """Two images, the first padded bottom-right as mmdet pads a batch."""
    x = torch.randn(2, 3, 96, 160, generator=gen)
    x[0, :, 77:] = 0
    x[0, :, :, 130:] = 0
    return x


def test_counter_sees_every_kind_of_sync():
    t = torch.arange(6.)
    with HostSyncCounter() as syncs:
        t.sum().item()
        bool(t[0] > 1)
        int(t[1])
        torch.equal(t, t)
        t.tolist()
        t.nonzero()
        t[t > 2]
        torch.unique(t)
        t.repeat_interleave(t.long())
        t.sum() + 1  # not a sync
    assert syncs.total == 9, syncs.counts


@pytest.mark.parametrize('kmeans_tol', [0.0, 1e-3])
def test_sync_free_forward_makes_no_sync(kmeans_tol):
    torch.manual_seed(0)
    model = ClusterViG(MINI, pad_aware=True, pyramid=dict(), sync_free=True,
                       kmeans_tol=kmeans_tol).eval()
    x = padded_batch(torch.Generator().manual_seed(0))
    with torch.no_grad(), HostSyncCounter() as syncs:
        model(x)
    assert syncs.total == 0, syncs.counts


def test_eager_forward_syncs_and_agrees_with_sync_free():
    """The CPU default keeps early stopping (and so syncs); both modes give the same
    features and partitions."""
    torch.manual_seed(0)
    eager = ClusterViG(MINI, pad_aware=True, pyramid=dict()).eval()
    free = ClusterViG(MINI, pad_aware=True, pyramid=dict(), sync_free=True).eval()
    free.load_state_dict(eager.state_dict())
    x = padded_batch(torch.Generator().manual_seed(1))
    with torch.no_grad():
        with HostSyncCounter() as syncs:
            outs, records = eager(x, return_intermediates=True)
        outs_free, records_free = free(x, return_intermediates=True)
    assert syncs.total > 0
    for a, b in zip(outs, outs_free):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    for a, b in zip(records, records_free):
        assert torch.equal(a.partition.labels, b.partition.labels)
        assert torch.equal(a.graph.valid, b.graph.valid)


def test_sync_free_backward_makes_no_sync():
    torch.manual_seed(0)
    model = ClusterViG(MINI, pad_aware=True, pyramid=dict(), sync_free=True).train()
    x = padded_batch(torch.Generator().manual_seed(2))
    with HostSyncCounter() as syncs:
        sum(out.sum() for out in model(x)).backward()
    assert syncs.total == 0, syncs.counts


def test_compile_fullgraph_on_cpu():
    """No graph break anywhere in the backbone (fullgraph=True raises on one)."""
    torch.manual_seed(0)
    model = ClusterViG(MINI, pad_aware=True, pyramid=dict()).eval()
    x = padded_batch(torch.Generator().manual_seed(3))
    compiled = torch.compile(model, fullgraph=True)
    with torch.no_grad():
        expected, got = model(x), compiled(x)
    for a, b in zip(expected, got):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a GPU')
def test_cuda_forward_under_sync_debug_error():
    """On a GPU, CUDA itself raises on any synchronising call (default mode there)."""
    torch.manual_seed(0)
    model = ClusterViG(MINI, pad_aware=True, pyramid=dict()).cuda().eval()
    x = padded_batch(torch.Generator().manual_seed(4)).cuda()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode('error')
    try:
        with torch.no_grad():
            model(x)
    finally:
        torch.cuda.set_sync_debug_mode('default')
