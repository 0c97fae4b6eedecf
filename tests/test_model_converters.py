"""tools/model_converters/clustervig_to_mmcvig.py: the ClusterViG authors' checkpoints to
mmcvig's and back.

The authors publish no weights, so the input is a synthetic state dict of their CViG-Ti
(``IsoClusterViG_Ti_n196_c4``), random values under the names and shapes their code
gives (listed in ../shared/reference/AUTHORS_CODE.md), generated here from that pattern
and not from mmcvig's modules: the converter's mapping is checked against an independent
account of the names, and its output against the modules the configs build.
"""
import copy
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.runner.checkpoint import _load_checkpoint_with_prefix, load_checkpoint
from mmpretrain.registry import MODELS

from mmcvig.models import ClusterViG
from mmcvig.models.degc.graph_conv import interleave

ROOT = Path(__file__).resolve().parents[1]
CONVERTER = ROOT / 'tools' / 'model_converters' / 'clustervig_to_mmcvig.py'
AUTHORS_CODE = ROOT.parent / 'shared' / 'reference' / 'AUTHORS_CODE.md'
CONFIG = ROOT / 'configs' / 'cvig-ti_8xb128_in1k.py'

# The authors' CViG-Ti: channels, Grapher + FFN pairs, token grid at 224, stem widths,
# and its parameter count with both classifiers (AUTHORS_CODE.md).
TI = dict(channels=192, pairs=12, grid=14, stem=(64, 64, 96, 192, 192))
TI_PARAMS = 11_472_304
MLP = 'graphconv.layer.nn_vertex.layer.lins.0.head_list.0'
GAT = 'graphconv.layer.nn_centroids.layer.layer'

pytestmark = pytest.mark.usefixtures('one_thread')


def load_converter():
    # tools/ is not a package: load the script by path, as it is run.
    spec = importlib.util.spec_from_file_location('clustervig_to_mmcvig', CONVERTER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


converter = load_converter()


# ------------------------------------------------------- the authors' state dict
def authors_shapes(channels, pairs, grid, stem, mlp_in=None, num_classes=1000):
    """Name -> shape of every tensor of the authors' isotropic ClusterViG, in their
    order: ``stem.convs`` conv/BN/GELU triples, ``backbone`` alternating Grapher and
    FFN, then ``prediction`` (pool, conv, BN, GELU), ``head`` and ``dist_head``."""
    c = channels
    shapes = {'pos_embed': (1, c, grid, grid)}

    def conv(name, out, inp, k=1):
        shapes.update({f'{name}.weight': (out, inp, k, k), f'{name}.bias': (out, )})

    def bn(name, width):
        shapes.update({f'{name}.{p}': (width, ) for p in
                       ('weight', 'bias', 'running_mean', 'running_var')})
        shapes[f'{name}.num_batches_tracked'] = ()

    for i, (inp, out) in enumerate(zip((3, ) + stem[:-1], stem)):
        conv(f'stem.convs.{3 * i}', out, inp, 3)
        bn(f'stem.convs.{3 * i + 1}', out)
    for i in range(pairs):
        grapher, ffn = f'backbone.{2 * i}', f'backbone.{2 * i + 1}'
        conv(f'{grapher}.cpe.pe', c, 1, 7)
        conv(f'{grapher}.fc1.0', c, c)
        bn(f'{grapher}.fc1.1', c)
        shapes[f'{grapher}.{MLP}.weight'] = (2 * c, mlp_in or 3 * c)
        shapes[f'{grapher}.{MLP}.bias'] = (2 * c, )
        bn(f'{grapher}.graphconv.layer.nn_vertex.layer.norms.0.module', 2 * c)
        shapes[f'{grapher}.{GAT}.att'] = (1, 1, c)
        shapes[f'{grapher}.{GAT}.bias'] = (c, )
        for lin in ('lin_l', 'lin_r'):
            shapes.update({f'{grapher}.{GAT}.{lin}.weight': (c, c),
                           f'{grapher}.{GAT}.{lin}.bias': (c, )})
        conv(f'{grapher}.fc2.0', c, 2 * c)
        bn(f'{grapher}.fc2.1', c)
        conv(f'{ffn}.fc1.0', 4 * c, c)
        bn(f'{ffn}.fc1.1', 4 * c)
        conv(f'{ffn}.fc2.0', c, 4 * c)
        bn(f'{ffn}.fc2.1', c)
    conv('prediction.1', 1024, c)
    bn('prediction.2', 1024)
    conv('head', num_classes, 1024)
    conv('dist_head', num_classes, 1024)
    return shapes


def authors_state_dict(random=True, **arch):
    """Random (or zero) tensors of :func:`authors_shapes`; positive running variances,
    int64 batch counters."""
    gen = torch.Generator().manual_seed(0)
    state_dict = {}
    for name, shape in authors_shapes(**arch).items():
        if name.endswith('num_batches_tracked'):
            value = torch.randint(0, 10**6, shape, dtype=torch.int64, generator=gen)
        elif not random:
            value = torch.zeros(shape)
        elif name.endswith('running_var'):
            value = torch.rand(shape, generator=gen) + 0.5
        else:
            value = torch.randn(shape, generator=gen)
        state_dict[name] = value
    return state_dict


@pytest.fixture(scope='module')
def authors_ti():
    return authors_state_dict(**TI)


@pytest.fixture(scope='module')
def converted(authors_ti):
    return converter.convert(authors_ti)


@pytest.fixture(scope='module')
def converted_file(converted, tmp_path_factory):
    path = tmp_path_factory.mktemp('converted') / 'cvig-ti.pth'
    torch.save(converted, path)
    return path


@pytest.fixture(scope='module')
def classifier():
    """CViG-Ti's classifier as the Runner builds it from its config (the teacher, built
    on first use only, is not: nothing is downloaded)."""
    cfg = Config.fromfile(str(CONFIG))
    init_default_scope(cfg.default_scope)
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.setdefault('data_preprocessor', cfg.data_preprocessor)
    return MODELS.build(model_cfg)


def assert_same_tensors(actual, expected):
    assert list(actual) == list(expected)
    for name, value in expected.items():
        assert actual[name].dtype == value.dtype, name
        assert torch.equal(actual[name], value), name


def test_the_synthetic_state_dict_is_the_authors_ti():
    """Its parameter count is the authors' Ti's; and where the listing is at hand, every
    name, shape and dtype is the listing's, in its order."""
    shapes = authors_shapes(**TI)
    params = sum(torch.Size(shape).numel() for name, shape in shapes.items()
                 if not re.search(r'running_|num_batches', name))
    assert params == TI_PARAMS
    if not AUTHORS_CODE.is_file():
        pytest.skip(f'{AUTHORS_CODE} is not at hand')
    listed = [line.split('\t') for line in AUTHORS_CODE.read_text().splitlines()
              if line.count('\t') == 2]
    state_dict = authors_state_dict(**TI)
    assert [name for name, _, _ in listed] == list(state_dict)
    for name, shape, dtype in listed:
        assert tuple(state_dict[name].shape) == eval(shape), name
        assert str(state_dict[name].dtype) == f'torch.{dtype}', name


# ---------------------------------------------------------------------------- loading
def test_the_classifier_loads_it_strictly(converted, converted_file, classifier):
    """mmengine's load_checkpoint (what ``load_from`` runs), strict: the same names as
    the classifier's state dict, which leaves the teacher out."""
    assert classifier.with_teacher
    assert list(converted['state_dict']) == list(classifier.state_dict())
    load_checkpoint(classifier, str(converted_file), map_location='cpu', strict=True)
    assert_same_tensors(classifier.state_dict(), converted['state_dict'])
    assert converted['meta']['arch'] == 'tiny'
    assert converted['meta']['authors_model'] == 'IsoClusterViG_Ti_n196_c4'


def test_the_backbone_loads_through_the_backbone_prefix(authors_ti, converted_file):
    """What mmdet does with ``init_cfg=dict(type='Pretrained', prefix='backbone.')``:
    every backbone tensor (strict), and the Pretrained init itself."""
    weights = _load_checkpoint_with_prefix('backbone.', str(converted_file), 'cpu')
    ClusterViG('tiny').load_state_dict(weights, strict=True)
    backbone = ClusterViG('tiny', init_cfg=dict(type='Pretrained', checkpoint=str(converted_file),
                                                prefix='backbone.'))
    backbone.init_weights()
    assert_same_tensors(backbone.state_dict(), weights)
    assert torch.equal(backbone.pos_embed, authors_ti['pos_embed'])
    assert torch.equal(backbone.stem[4].bn.running_var, authors_ti['stem.convs.13.running_var'])
    assert torch.equal(backbone.blocks[11][1].fc2.conv.weight,
                       authors_ti['backbone.23.fc2.0.weight'])


def test_the_names_and_reshapes(authors_ti, converted):
    state_dict = converted['state_dict']
    pairs = {
        'backbone.stem.2.conv.weight': 'stem.convs.6.weight',
        'backbone.blocks.3.0.cpe.weight': 'backbone.6.cpe.pe.weight',
        'backbone.blocks.3.0.fc1.bn.num_batches_tracked': 'backbone.6.fc1.1.num_batches_tracked',
        'backbone.blocks.3.0.degc.global_update.lin_l.weight': f'backbone.6.{GAT}.lin_l.weight',
        'backbone.blocks.3.0.degc.local_update.mlp.bn.running_mean':
        'backbone.6.graphconv.layer.nn_vertex.layer.norms.0.module.running_mean',
        'backbone.blocks.3.1.fc1.conv.bias': 'backbone.7.fc1.0.bias',
        'head.hidden.bn.weight': 'prediction.2.weight',
    }
    for mmcvig_name, authors_name in pairs.items():
        assert torch.equal(state_dict[mmcvig_name], authors_ti[authors_name])
    assert torch.equal(state_dict['backbone.blocks.3.0.degc.global_update.att'],
                       authors_ti[f'backbone.6.{GAT}.att'][0, 0])
    assert torch.equal(state_dict['head.fc.weight'], authors_ti['head.weight'][:, :, 0, 0])
    assert torch.equal(state_dict['head.fc_dist.bias'], authors_ti['dist_head.bias'])
    assert state_dict['backbone.blocks.0.0.fc1.bn.num_batches_tracked'].dtype == torch.int64


def test_round_trip_gives_back_the_same_tensors(authors_ti, converted):
    assert_same_tensors(converter.convert_to_authors(converted['state_dict']), authors_ti)


@pytest.mark.parametrize('wrap', ['model', 'state_dict', 'module.'])
def test_wrapped_checkpoints(authors_ti, converted, wrap):
    """DeiT's ``model``, timm's ``state_dict``, a DDP model's ``module.`` names."""
    if wrap == 'module.':
        checkpoint = {f'module.{name}': value for name, value in authors_ti.items()}
    else:
        checkpoint = {wrap: authors_ti, 'epoch': 300}
    assert_same_tensors(converter.convert(checkpoint)['state_dict'], converted['state_dict'])


def test_reverse_reads_mmengine_checkpoints_without_the_teacher(authors_ti, converted_file):
    checkpoint = torch.load(converted_file, map_location='cpu', weights_only=True)
    checkpoint['state_dict']['teacher.stem.conv.weight'] = torch.ones(1)  # save_teacher=True
    assert_same_tensors(converter.convert_to_authors(checkpoint), authors_ti)


# -------------------------------------------------------------------- the G-GCN MLP
def authors_mlp_input(x, r, z):
    """The authors' MLP input, spelled out: ``[x_0, r_0, ..., x_{C-1}, r_{C-1}, z'_0, ...,
    z'_{C-1}]`` for every token (row)."""
    columns = [part[:, j] for j in range(x.shape[1]) for part in (x, r)]
    columns += [z[:, j] for j in range(x.shape[1])]
    return torch.stack(columns, dim=1)


def test_the_mlp_columns_follow_the_inputs(authors_ti, converted):
    """The authors' Linear on their input order == mmcvig's 1x1 conv on
    ``interleave(x, r, z')``, with the converted weight."""
    gen = torch.Generator().manual_seed(1)
    x, r, z = (torch.randn(10, TI['channels'], generator=gen) for _ in range(3))
    weight, bias = (authors_ti[f'backbone.0.{MLP}.{p}'] for p in ('weight', 'bias'))
    expected = F.linear(authors_mlp_input(x, r, z), weight, bias)
    prefix = 'backbone.blocks.0.0.degc.local_update.mlp.conv'
    mmcvig_out = F.conv2d(interleave(x, r, z)[..., None, None],
                          converted['state_dict'][f'{prefix}.weight'],
                          converted['state_dict'][f'{prefix}.bias'])
    torch.testing.assert_close(mmcvig_out[..., 0, 0], expected, rtol=1e-5, atol=1e-4)


def test_a_grouped_mlp_becomes_the_dense_authors_one():
    """mmcvig -> authors for a grouped MLP (S, B): the dense block-diagonal weight gives
    the grouped convolution's outputs."""
    channels, groups = 8, 4
    gen = torch.Generator().manual_seed(2)
    weight = torch.randn(2 * channels, 3 * channels // groups, 1, 1, generator=gen)
    x, r, z = (torch.randn(6, channels, generator=gen) for _ in range(3))
    grouped = F.conv2d(interleave(x, r, z)[..., None, None], weight, groups=groups)
    dense = converter.mlp_to_authors(weight)
    assert dense.shape == (2 * channels, 3 * channels)
    torch.testing.assert_close(F.linear(authors_mlp_input(x, r, z), dense), grouped[..., 0, 0])


# ------------------------------------------------------------------------- refusals
def test_the_groups_1_small_is_refused():
    """The authors' S has a dense (640, 960) MLP weight, mmcvig's 'small' groups=4."""
    authors_s = authors_state_dict(random=False, channels=320, pairs=16, grid=14,
                                   stem=(64, 80, 160, 320, 320))
    with pytest.raises(ValueError, match='groups=1') as error:
        converter.convert(authors_s)
    message = str(error.value)
    assert "'small'" in message and 'groups=4' in message
    assert f'backbone.0.{MLP}.weight' in message and '(640, 960)' in message


def test_the_groups_1_b_dagger_is_refused():
    """Found by its 28x28 token grid (stride 8); refused before the rest is read."""
    authors_bhr = {'pos_embed': torch.zeros(1, 640, 28, 28),
                   f'backbone.0.{MLP}.weight': torch.zeros(1280, 1920)}
    authors_bhr.update({f'backbone.{i}.fc2.0.bias': torch.zeros(640) for i in range(32)})
    with pytest.raises(ValueError, match="IsoClusterViG_B_n784_c6 cannot become mmcvig's "
                                         "'base-hr'.*groups=1"):
        converter.convert(authors_bhr)


def _drop(name):
    def change(state_dict):
        del state_dict[name]
    return change


def _set(name, value):
    def change(state_dict):
        state_dict[name] = value
    return change


def _add(*names):
    def change(state_dict):
        state_dict.update({name: torch.zeros(192) for name in names})
    return change


def _rename(old, new):
    def change(state_dict):
        state_dict[new] = state_dict.pop(old)
    return change


@pytest.mark.parametrize('change, message', [
    (_drop('backbone.5.fc2.1.running_var'), 'missing keys: backbone.5.fc2.1.running_var'),
    (_drop('dist_head.weight'), 'missing keys: dist_head.weight'),
    (_set('backbone.3.fc1.0.extra', torch.zeros(1)), 'unexpected keys: backbone.3.fc1.0.extra'),
    (_set(f'backbone.4.{GAT}.att', torch.zeros(192)),
     rf'backbone\.4\.{re.escape(GAT)}\.att has shape \(192,\), expected \(1, 1, 192\)'),
    (_set('backbone.0.cpe.pe.weight', torch.zeros(192, 1, 5, 5)),
     r'backbone\.0\.cpe\.pe\.weight has shape \(192, 1, 5, 5\)'),
    (_set('dist_head.weight', torch.zeros(10, 1024, 1, 1)), r'dist_head\.weight has shape'),
    (_set('stem.convs.4.num_batches_tracked', 7),
     "'stem.convs.4.num_batches_tracked' holds 'int', not a tensor"),
    (_set('pos_embed', torch.zeros(1, 192, 14)), r'pos_embed has shape \(1, 192, 14\)'),
    (_drop('pos_embed'), 'no pos_embed'),
    (_rename('pos_embed', 'backbone.pos_embed'), '--reverse'),
    (_set('backbone.24.fc1.0.bias', torch.zeros(192)), 'an even number of entries'),
    (_add('backbone.24.fc1.0.bias', 'backbone.25.fc1.0.bias'), 'no ClusterViG arch has 13 blocks'),
    (_set('backbone.23.fc3.0.bias', torch.zeros(192)), None),  # unexpected, named
])
def test_broken_state_dicts_are_refused_by_name(authors_ti, change, message):
    state_dict = dict(authors_ti)
    change(state_dict)
    with pytest.raises(ValueError, match=message or r'unexpected keys: backbone\.23\.fc3'):
        converter.convert(state_dict)


def test_broken_mmcvig_state_dicts_are_refused_by_name(converted):
    state_dict = dict(converted['state_dict'])
    state_dict['head.fc.weight'] = torch.zeros(1000, 512)
    with pytest.raises(ValueError, match=r'head\.fc\.weight has shape \(1000, 512\)'):
        converter.convert_to_authors(state_dict)
    del state_dict['backbone.blocks.2.1.fc1.bn.bias']
    with pytest.raises(ValueError, match=r'missing keys: backbone\.blocks\.2\.1\.fc1\.bn\.bias'):
        converter.convert_to_authors(state_dict)


# -------------------------------------------------------------------------------- CLI
def test_the_command_line(authors_ti, classifier, tmp_path):
    """Run as a user runs it (a subprocess, from elsewhere, no PYTHONPATH); the result
    loads strictly; ``--reverse`` gives the authors' tensors back."""
    src, dst, back = tmp_path / 'authors.pth', tmp_path / 'out' / 'cvig-ti.pth', tmp_path / 'b.pth'
    torch.save({'model': authors_ti}, src)
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    result = subprocess.run([sys.executable, str(CONVERTER), str(src), str(dst)], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "IsoClusterViG_Ti_n196_c4 -> mmcvig 'tiny'" in result.stdout
    load_checkpoint(classifier, str(dst), map_location='cpu', strict=True)
    converter.main(['--reverse', str(dst), str(back)])
    assert_same_tensors(torch.load(back, map_location='cpu', weights_only=True), authors_ti)


def test_the_command_line_reports_a_refusal(authors_ti, tmp_path):
    src = tmp_path / 'broken.pth'
    state_dict = dict(authors_ti)
    del state_dict['head.bias']
    torch.save(state_dict, src)
    with pytest.raises(SystemExit, match='missing keys: head.bias'):
        converter.main([str(src), str(tmp_path / 'out.pth')])
    assert not (tmp_path / 'out.pth').exists()
