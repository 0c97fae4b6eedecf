"""ClusterViG backbone and classification head: sizes, shapes, behaviour."""
import pytest
import torch
import torch.nn.functional as F
from mmengine.runner import save_checkpoint
from torch.nn.modules.batchnorm import _BatchNorm

from mmcvig.analysis import count_conv_macs, count_full_macs, count_params
from mmcvig.models import ClusterViG, ClusterViGClsHead

# A few-thousand-parameter arch for behaviour tests (the real ones are slow on 2 cores).
MINI = dict(num_blocks=3, channels=32, num_clusters=3, groups=2, stride=16)

# MODEL_SPEC.md: params in M (backbone alone / + head / + distillation head), paper GMACs.
SPEC = {
    'tiny': (9.223, 10.45, 11.47, 1.26),
    'small': (25.782, 27.14, 28.16, 4.12),
    'base': (102.095, 103.78, 104.80, 16.07),
    'base-hr': (102.472, 104.16, 105.18, 62.03),
}


def classifier(arch, distillation):
    backbone = ClusterViG(arch)
    head = ClusterViGClsHead(1000, backbone.embed_dims, distillation=distillation)
    return torch.nn.Sequential(backbone, head).eval()


@pytest.mark.parametrize('arch', sorted(SPEC))
def test_parameter_counts_match_paper(arch):
    backbone_m, head_m, dist_m, _ = SPEC[arch]
    backbone = ClusterViG(arch)
    assert count_params(backbone) / 1e6 == pytest.approx(backbone_m, abs=0.001)
    for distillation, expected in ((False, head_m), (True, dist_m)):
        head = ClusterViGClsHead(1000, backbone.embed_dims, distillation=distillation)
        total = (count_params(backbone) + count_params(head)) / 1e6
        assert total == pytest.approx(expected, rel=0.01)


@pytest.mark.parametrize('arch', sorted(SPEC))
def test_conv_gmacs_match_paper(arch):
    """Paper rule: convolutions only (see mmcvig.analysis.complexity), at 224x224."""
    model = classifier(arch, distillation=True)
    gmacs = count_conv_macs(model, (torch.zeros(1, 3, 224, 224), )) / 1e9
    assert gmacs == pytest.approx(SPEC[arch][3], rel=0.03)


def test_full_macs_exceed_conv_macs():
    model = classifier('tiny', distillation=False)
    x = (torch.zeros(1, 3, 224, 224), )
    conv, full = count_conv_macs(model, x), count_full_macs(model, x)
    # The G-GCN MLP alone adds 4 C^2 N per block (its token parts, C -> 2C twice; the
    # centroid part is per cluster): ~0.35 GMACs for tiny.
    assert full - conv > 0.35e9


def test_k_schedule_and_arch_table():
    model = ClusterViG('tiny')
    assert [b[0].degc.k for b in model.blocks] == [9, 9, 10, 11, 12, 13, 13, 14, 15, 16, 17, 18]
    assert {b[0].degc.num_clusters for b in ClusterViG('base-hr').blocks} == {6}
    assert ClusterViG('small').blocks[0][0].degc.local_update.mlp.conv.groups == 4


@pytest.mark.parametrize('batch', [1, 2])
def test_channels_last_inside_default_layout_outside(batch):
    """The network runs channels-last (every conv and BN sees such a map); the outputs
    come back in the default layout, which mmcv's RoI ops read as raw NCHW memory. Same
    weights, same outputs as with channels_last=False."""
    torch.manual_seed(0)
    model = ClusterViG(MINI, pyramid=dict()).eval()
    plain = ClusterViG(MINI, pyramid=dict(), channels_last=False).eval()
    plain.load_state_dict(model.state_dict())
    layouts = set()

    def record(module, args):
        layouts.add(args[0].is_contiguous(memory_format=torch.channels_last))

    hooks = [m.register_forward_pre_hook(record) for m in model.modules()
             if isinstance(m, (torch.nn.Conv2d, torch.nn.BatchNorm2d))]
    x = torch.randn(batch, 3, 64, 80)
    with torch.no_grad():
        outs, ref = model(x), plain(x)
    for hook in hooks:
        hook.remove()
    assert layouts == {True}
    for out, expected in zip(outs, ref):
        assert out.is_contiguous()
        torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('size,expected', [((125, 130), (8, 9)), ((511, 511), (32, 32)),
                                           ((32, 32), (2, 2)), ((16, 16), (1, 1))])
def test_odd_and_tiny_inputs(size, expected):
    model = ClusterViG(MINI, out_indices=(0, 2)).eval()
    outs = model(torch.randn(2, 3, *size))
    assert len(outs) == 2
    for out in outs:
        assert out.shape == (2, 32, *expected) and torch.isfinite(out).all()


@pytest.mark.parametrize('deterministic', [False, True])
def test_pos_embed_resized_bicubically(deterministic):
    """Bicubic, not bilinear; in deterministic mode by two matrix products (the backward
    of F.interpolate's bicubic mode raises on CUDA there), to the same values."""
    model = ClusterViG(MINI)
    torch.nn.init.normal_(model.pos_embed)
    expected = F.interpolate(model.pos_embed, size=(7, 9), mode='bicubic', align_corners=False)
    bilinear = F.interpolate(model.pos_embed, size=(7, 9), mode='bilinear', align_corners=False)
    torch.use_deterministic_algorithms(deterministic)
    try:
        resized = model.resized_pos_embed(7, 9)
    finally:
        torch.use_deterministic_algorithms(False)
    torch.testing.assert_close(resized, expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(resized, bilinear, rtol=1e-2, atol=1e-2)
    assert model.resized_pos_embed(14, 14) is model.pos_embed


def test_batch_independence_and_determinism():
    torch.manual_seed(0)
    model = ClusterViG(MINI).eval()
    x = torch.randn(4, 3, 64, 80)
    with torch.no_grad():
        together = model(x)[0]
        for i in range(4):
            torch.testing.assert_close(model(x[i:i + 1])[0][0], together[i], rtol=1e-3,
                                       atol=1e-4)
        assert torch.equal(model(x)[0], together)


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    for graph_conv in ('mrgcn', 'edgeconv', 'graphsage', 'gin'):
        model = ClusterViG(MINI, graph_conv=graph_conv, drop_path_rate=0.1).train()
        model(torch.randn(2, 3, 64, 64))[0].square().mean().backward()
        missing = [n for n, p in model.named_parameters() if p.grad is None or
                   not p.grad.abs().sum() > 0]
        assert not missing, f'{graph_conv}: no gradient for {missing}'


def test_sparse_impl_matches_dense_backbone():
    torch.manual_seed(0)
    dense = ClusterViG(MINI).eval()
    sparse = ClusterViG(MINI, graph_impl='sparse').eval()
    sparse.load_state_dict(dense.state_dict())
    x = torch.randn(2, 3, 48, 64)
    with torch.no_grad():
        torch.testing.assert_close(dense(x)[0], sparse(x)[0], rtol=1e-4, atol=1e-4)


def test_with_cp_matches_plain():
    torch.manual_seed(0)
    plain = ClusterViG(MINI).train()
    ckpt = ClusterViG(MINI, with_cp=True).train()
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 64, 64)
    plain(x)[0].sum().backward()
    ckpt(x)[0].sum().backward()
    for (name, p1), p2 in zip(plain.named_parameters(), ckpt.parameters()):
        torch.testing.assert_close(p1.grad, p2.grad, rtol=1e-4, atol=1e-5, msg=name)


def test_frozen_stages():
    model = ClusterViG(MINI, frozen_stages=2)
    model.train()
    assert not model.pos_embed.requires_grad
    for module in (model.stem, model.blocks[0], model.blocks[1]):
        assert not module.training
        assert all(not p.requires_grad for p in module.parameters())
    assert model.blocks[2].training
    assert all(p.requires_grad for p in model.blocks[2].parameters())


def test_norm_eval():
    model = ClusterViG(MINI, norm_eval=True)
    model.train()
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    assert norms and all(not m.training for m in norms)
    assert model.blocks[0].training


def test_pretrained_with_prefix(tmp_path):
    """A classifier checkpoint (keys 'backbone.*') loads into the bare backbone."""
    source = ClusterViG(MINI)
    torch.nn.init.normal_(source.pos_embed)
    state = {f'backbone.{k}': v for k, v in source.state_dict().items()}
    state['head.fc.weight'] = torch.zeros(3, 3)
    path = str(tmp_path / 'cls.pth')
    save_checkpoint({'state_dict': state}, path)
    target = ClusterViG(MINI, init_cfg=dict(type='Pretrained', checkpoint=path,
                                            prefix='backbone.'))
    target.init_weights()
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key


@pytest.mark.parametrize('kwargs,error,match', [
    (dict(arch='huge'), KeyError, 'tiny'),
    (dict(arch=dict(channels=8)), ValueError, 'num_blocks'),
    (dict(out_indices=3), ValueError, r'-3\.\.2'),
    (dict(frozen_stages=4), ValueError, 'frozen_stages'),
    (dict(num_clusters=0), ValueError, 'num_clusters'),
    (dict(graph_conv='gat'), KeyError, 'mrgcn'),
])
def test_invalid_settings(kwargs, error, match):
    kwargs = {'arch': MINI, **kwargs}
    with pytest.raises(error, match=match):
        ClusterViG(**kwargs)


def test_head_distillation_averages_at_test_time():
    torch.manual_seed(0)
    head = ClusterViGClsHead(5, 32, hidden_channels=16, distillation=True)
    feats = (torch.randn(3, 32, 4, 4), )
    head.train()
    logits, logits_dist = head(feats)
    assert logits.shape == logits_dist.shape == (3, 5)
    head.eval()
    hidden = head.pre_logits(feats)
    torch.testing.assert_close(head(feats), (head.fc(hidden) + head.fc_dist(hidden)) / 2)
    assert ClusterViGClsHead(5, 32, hidden_channels=16)(feats).shape == (3, 5)
