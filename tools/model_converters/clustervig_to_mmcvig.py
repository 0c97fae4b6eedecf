"""Convert a checkpoint of the ClusterViG authors' code to an mmcvig checkpoint, or back.

The authors' research code (github.com/dhruvashp/ClusterViG, the timm-style
``IsoClusterViG_*`` models) holds the same network under other names and, in places,
other shapes. ``convert`` turns its state dict (bare, or under ``model`` or
``state_dict``) into a checkpoint of the whole classifier the configs build
(``configs/cvig-*_8xb128_in1k*.py``: ``backbone.`` ClusterViG, ``head.``
ClusterViGClsHead with its distillation classifier), which mmpretrain loads strictly
(``load_from``) and mmdet through ``init_cfg=dict(type='Pretrained', checkpoint=...,
prefix='backbone.')``. ``convert_to_authors`` (``--reverse``) does the inverse, so that
the authors' code can run mmcvig's weights.

What changes besides the names:

* GATv2's ``att``: PyG's :math:`(1, 1, C)` is mmcvig's :math:`(C, )`.
* The classifiers: the authors' 1x1 convolutions are mmcvig's ``nn.Linear``.
* The G-GCN MLP: the authors' ``Linear(3C, 2C)`` reads ``[x_0, r_0, ..., x_{C-1},
  r_{C-1}, z'_0, ..., z'_{C-1}]``, mmcvig's 1x1 convolution ``interleave(x, r, z')`` =
  ``[x_0, r_0, z'_0, x_1, ...]``: the columns are permuted (:func:`mlp_columns`).

The variant is read from the shapes (channels and token grid of ``pos_embed``, the
number of blocks). The authors' S, B and B-dagger use ``groups=1`` in the G-GCN MLP,
mmcvig's (and paper Table III's parameter counts) ``groups=4``: a dense weight is not a
grouped one, so those are refused. The reverse direction writes a grouped weight as the
dense block-diagonal matrix it is, so every variant converts that way.

Examples:
  python tools/model_converters/clustervig_to_mmcvig.py authors_ti.pth cvig-ti.pth
  python tools/model_converters/clustervig_to_mmcvig.py --reverse cvig-ti.pth authors.pth
"""
import argparse
import os
import os.path as osp
import re
import sys
from collections import OrderedDict
from typing import Dict, Iterable, List, NamedTuple

# Run from a checkout without installing or setting PYTHONPATH.
sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

import torch  # noqa: E402
from torch import Tensor  # noqa: E402

import mmcvig  # noqa: E402  (also allow-lists what mmengine's checkpoints hold)
from mmcvig.models import ClusterViG, ClusterViGClsHead  # noqa: E402

SOURCE = "the ClusterViG authors' code (github.com/dhruvashp/ClusterViG)"
# The authors' factory function of every arch, for the messages and the meta.
AUTHORS_MODELS = {
    'tiny': 'IsoClusterViG_Ti_n196_c4',
    'small': 'IsoClusterViG_S_n196_c4',
    'base': 'IsoClusterViG_B_n196_c4',
    'base-hr': 'IsoClusterViG_B_n784_c6',
}
# The authors' `prediction` conv is 1024 wide in every variant, as the configs' head.
HIDDEN_CHANNELS = 1024
IMG_SIZE = 224  # the size pos_embed is made for, in both codes
STEM_LAYERS = 5  # conv + BN (+ GELU) triples in the authors' `stem.convs`
CONV = ('weight', 'bias')
BN = ('weight', 'bias', 'running_mean', 'running_var', 'num_batches_tracked')
GAT = ('bias', 'lin_l.weight', 'lin_l.bias', 'lin_r.weight', 'lin_r.bias')
# Inside the authors' Grapher `backbone.{2i}`: the G-GCN MLP, its norm and the GATv2.
AUTHORS_MLP = 'graphconv.layer.nn_vertex.layer.lins.0.head_list.0'
AUTHORS_MLP_NORM = 'graphconv.layer.nn_vertex.layer.norms.0.module'
AUTHORS_GAT = 'graphconv.layer.nn_centroids.layer.layer'
# Keys of a model built by mmpretrain that are not the student's: a teacher saved with
# `save_teacher=True`. The authors' checkpoint has none.
NOT_STUDENT = ('teacher.', )
MAX_LISTED = 8  # keys named in an error message


class Rule(NamedTuple):
    """One tensor: its name in the authors' state dict, its name in mmcvig's, and the
    kind of change between them (``copy``, ``att``, ``linear`` or ``mlp``)."""
    authors: str
    mmcvig: str
    kind: str = 'copy'


# ---------------------------------------------------------------------------- names
def _same(src: str, dst: str, names: Iterable[str]) -> List[Rule]:
    return [Rule(f'{src}.{name}', f'{dst}.{name}') for name in names]


def _conv_bn(conv: str, bn: str, dst: str) -> List[Rule]:
    """The authors' conv and BN (two entries of an ``nn.Sequential``) -> mmcv's
    ``ConvModule`` ``dst`` (``.conv``, ``.bn``)."""
    return _same(conv, f'{dst}.conv', CONV) + _same(bn, f'{dst}.bn', BN)


def _grapher(src: str, dst: str) -> List[Rule]:
    degc = f'{dst}.degc'
    mlp, gat = f'{src}.{AUTHORS_MLP}', f'{src}.{AUTHORS_GAT}'
    return [
        *_same(f'{src}.cpe.pe', f'{dst}.cpe', CONV),
        *_conv_bn(f'{src}.fc1.0', f'{src}.fc1.1', f'{dst}.fc1'),
        Rule(f'{mlp}.weight', f'{degc}.local_update.mlp.conv.weight', 'mlp'),
        Rule(f'{mlp}.bias', f'{degc}.local_update.mlp.conv.bias'),
        *_same(f'{src}.{AUTHORS_MLP_NORM}', f'{degc}.local_update.mlp.bn', BN),
        Rule(f'{gat}.att', f'{degc}.global_update.att', 'att'),
        *_same(gat, f'{degc}.global_update', GAT),
        *_conv_bn(f'{src}.fc2.0', f'{src}.fc2.1', f'{dst}.fc2'),
    ]


def key_rules(num_blocks: int) -> List[Rule]:
    """Every tensor of a model with ``num_blocks`` Grapher + FFN blocks, both names.

    The authors' ``backbone`` alternates Graphers (even indices) and FFNs (odd), mmcvig's
    ``backbone.blocks.{i}`` holds both (``.0``, ``.1``); the authors' ``stem.convs``
    counts the GELUs between the conv + BN pairs.
    """
    rules = [Rule('pos_embed', 'backbone.pos_embed')]
    for i in range(STEM_LAYERS):
        rules += _conv_bn(f'stem.convs.{3 * i}', f'stem.convs.{3 * i + 1}',
                          f'backbone.stem.{i}')
    for i in range(num_blocks):
        block = f'backbone.blocks.{i}'
        ffn = f'backbone.{2 * i + 1}'
        rules += _grapher(f'backbone.{2 * i}', f'{block}.0')
        rules += _conv_bn(f'{ffn}.fc1.0', f'{ffn}.fc1.1', f'{block}.1.fc1')
        rules += _conv_bn(f'{ffn}.fc2.0', f'{ffn}.fc2.1', f'{block}.1.fc2')
    rules += _conv_bn('prediction.1', 'prediction.2', 'head.hidden')
    for src, dst in (('head', 'head.fc'), ('dist_head', 'head.fc_dist')):
        rules += [Rule(f'{src}.weight', f'{dst}.weight', 'linear'),
                  Rule(f'{src}.bias', f'{dst}.bias')]
    return rules


# --------------------------------------------------------------------------- shapes
def mmcvig_shapes(arch: str, num_classes: int) -> Dict[str, torch.Size]:
    """Name -> shape of every tensor in the state dict of the classifier the configs
    build, in its order, read from the modules themselves (built on the meta device: no
    memory, no initialisation)."""
    channels = ClusterViG.arch_settings[arch]['channels']
    with torch.device('meta'):
        parts = dict(backbone=ClusterViG(arch, img_size=IMG_SIZE),
                     head=ClusterViGClsHead(num_classes, channels, HIDDEN_CHANNELS,
                                            distillation=True))
    return OrderedDict((f'{prefix}.{name}', value.shape) for prefix, module in parts.items()
                       for name, value in module.state_dict().items())


def authors_shape(kind: str, shape: torch.Size) -> torch.Size:
    """The shape the authors' code gives a tensor that has ``shape`` in mmcvig."""
    if kind == 'att':
        return torch.Size((1, 1, *shape))
    if kind == 'linear':
        return torch.Size((*shape, 1, 1))
    if kind == 'mlp':  # always dense there: (2C, 3C)
        return torch.Size((shape[0], 3 * shape[0] // 2))
    return shape


# ---------------------------------------------------------------------- the G-GCN MLP
def mlp_columns(channels: int) -> Tensor:
    """Column ``3j + p`` of mmcvig's MLP weight is column ``mlp_columns(C)[3j + p]`` of
    the authors': ``2j`` (``x_j``), ``2j + 1`` (``r_j``) and ``2C + j`` (``z'_j``)."""
    j = torch.arange(channels)
    return torch.stack([2 * j, 2 * j + 1, 2 * channels + j], dim=1).flatten()


def mlp_to_mmcvig(weight: Tensor) -> Tensor:
    """The authors' ``(2C, 3C)`` Linear weight -> mmcvig's ``(2C, 3C, 1, 1)`` conv."""
    return weight[:, mlp_columns(weight.shape[1] // 3)][..., None, None]


def mlp_to_authors(weight: Tensor) -> Tensor:
    """mmcvig's ``(2C, 3C / g, 1, 1)`` conv weight with ``g`` groups -> the authors'
    dense ``(2C, 3C)``: output block ``k`` of a grouped convolution reads input block
    ``k`` only, which a dense one does with zeros elsewhere (block-diagonal)."""
    out_channels = weight.shape[0]
    groups = 3 * out_channels // 2 // weight.shape[1]
    dense = torch.block_diag(*weight[..., 0, 0].chunk(groups, dim=0))
    return dense[:, torch.argsort(mlp_columns(out_channels // 2))].contiguous()


TO_MMCVIG = {
    'copy': lambda t: t,
    'att': lambda t: t.reshape(-1),
    'linear': lambda t: t.flatten(1),
    'mlp': mlp_to_mmcvig,
}
TO_AUTHORS = {
    'copy': lambda t: t,
    'att': lambda t: t.reshape(1, 1, -1),
    'linear': lambda t: t[..., None, None],
    'mlp': mlp_to_authors,
}


# ----------------------------------------------------------------------- validation
def _listed(keys: List[str]) -> str:
    more = f' and {len(keys) - MAX_LISTED} more' if len(keys) > MAX_LISTED else ''
    return ', '.join(keys[:MAX_LISTED]) + more


def plain_state_dict(checkpoint) -> Dict[str, Tensor]:
    """The state dict of a loaded checkpoint: under ``model`` (DeiT's), ``state_dict``
    (timm's and mmengine's) or bare; names of tensors only, a DDP ``module.`` prefix
    dropped."""
    if not isinstance(checkpoint, dict):
        raise ValueError(f'a checkpoint must be a dict, got {type(checkpoint).__name__}')
    for key in ('model', 'state_dict'):
        if isinstance(checkpoint.get(key), dict):
            checkpoint = checkpoint[key]
            break
    for key, value in checkpoint.items():
        if not isinstance(key, str) or not isinstance(value, Tensor):
            raise ValueError(f'{key!r} holds {type(value).__name__!r}, not a tensor (expected '
                             f'a state dict, bare or under "model" or "state_dict")')
    if checkpoint and all(key.startswith('module.') for key in checkpoint):
        checkpoint = {key[len('module.'):]: value for key, value in checkpoint.items()}
    return checkpoint


def _check_keys(state_dict: Dict[str, Tensor], expected: List[str], what: str):
    missing = [key for key in expected if key not in state_dict]
    known = set(expected)
    extra = sorted(key for key in state_dict if key not in known)
    problems = []
    if missing:
        problems.append(f'missing keys: {_listed(missing)}')
    if extra:
        problems.append(f'unexpected keys: {_listed(extra)}')
    if problems:
        raise ValueError(f'not {what}: ' + '; '.join(problems))


def _check_shape(key: str, tensor: Tensor, shape: torch.Size):
    if tensor.shape != shape:
        raise ValueError(f'{key} has shape {tuple(tensor.shape)}, expected {tuple(shape)}')


def _check_rules(rules: List[Rule], shapes: Dict[str, torch.Size]):
    """The names this script writes must be those the modules hold (else they changed
    and this script did not follow)."""
    names = {rule.mmcvig for rule in rules}
    if names != set(shapes):
        raise RuntimeError(
            f'{osp.basename(__file__)} is out of date with mmcvig\'s modules: it writes '
            f'{_listed(sorted(names - set(shapes)))} that they lack and lacks '
            f'{_listed(sorted(set(shapes) - names))}')


def _num_blocks(state_dict: Dict[str, Tensor], pattern: str) -> int:
    """One more than the largest block index in the names matching ``pattern``."""
    indices = [int(m.group(1)) for m in map(re.compile(pattern).match, state_dict) if m]
    return max(indices) + 1 if indices else 0


def _pos_embed(state_dict: Dict[str, Tensor], key: str) -> Tensor:
    pos_embed = state_dict.get(key)
    if pos_embed is None:
        raise ValueError(f'no {key}: not a ClusterViG state dict of this layout')
    if pos_embed.dim() != 4 or pos_embed.shape[0] != 1 or \
            pos_embed.shape[2] != pos_embed.shape[3]:
        raise ValueError(f'{key} has shape {tuple(pos_embed.shape)}, expected (1, C, G, G)')
    return pos_embed


def _match_arch(channels: int, grid: int, num_blocks: int) -> str:
    """The arch of :attr:`ClusterViG.arch_settings` with these shapes."""
    stride = IMG_SIZE // grid if grid and IMG_SIZE % grid == 0 else None
    for arch, setting in ClusterViG.arch_settings.items():
        if (setting['num_blocks'], setting['channels'], setting['stride']) == \
                (num_blocks, channels, stride):
            return arch
    known = '; '.join(f"{arch}: {s['num_blocks']} blocks, C={s['channels']}, "
                      f"{IMG_SIZE // s['stride']}x{IMG_SIZE // s['stride']} tokens"
                      for arch, s in ClusterViG.arch_settings.items())
    raise ValueError(f'no ClusterViG arch has {num_blocks} blocks of C={channels} on a '
                     f'{grid}x{grid} token grid at {IMG_SIZE} (known: {known})')


def _num_classes(state_dict: Dict[str, Tensor], key: str) -> int:
    # A wrong shape is reported by the shape check, against the configs' 1000 classes.
    weight = state_dict[key]
    return weight.shape[0] if weight.dim() > 0 and weight.shape[0] > 0 else 1000


def _refuse_dense_mlp(state_dict: Dict[str, Tensor], arch: str, channels: int):
    """The authors' S / B / B-dagger: a dense MLP where mmcvig's arch has groups."""
    groups = ClusterViG.arch_settings[arch]['groups']
    key = f'backbone.0.{AUTHORS_MLP}.weight'
    weight = state_dict.get(key)
    if groups == 1 or weight is None or weight.shape != (2 * channels, 3 * channels):
        return
    raise ValueError(
        f"{AUTHORS_MODELS[arch]} cannot become mmcvig's '{arch}': its G-GCN MLP {key} is "
        f'a Linear({3 * channels}, {2 * channels}) with groups=1, weight '
        f"{tuple(weight.shape)}; mmcvig's '{arch}' (like paper Table III's parameter "
        f'counts) uses groups={groups}, a weight of shape ({2 * channels}, '
        f'{3 * channels // groups}, 1, 1). A dense weight is not a grouped one, so the '
        f'network would change. Only CViG-Ti (groups=1 in both codes) converts.')


# ------------------------------------------------------------------------ converting
def convert(checkpoint) -> dict:
    """The authors' checkpoint (or state dict) -> ``{'meta', 'state_dict'}`` of the
    mmpretrain classifier the configs build.

    Raises:
        ValueError: naming the key, for anything that is not a state dict of one of the
            authors' variants that mmcvig has (missing, unexpected, misshapen or
            non-tensor entries, the groups=1 S / B / B-dagger).
    """
    state_dict = plain_state_dict(checkpoint)
    if 'backbone.pos_embed' in state_dict:
        raise ValueError('backbone.pos_embed: this is an mmcvig checkpoint already (convert '
                         'it to the authors\' layout with --reverse)')
    pos_embed = _pos_embed(state_dict, 'pos_embed')
    channels, grid = pos_embed.shape[1], pos_embed.shape[-1]
    num_blocks = _num_blocks(state_dict, r'backbone\.(\d+)\.')
    if num_blocks % 2:
        raise ValueError(f'backbone.{num_blocks - 1}: the authors\' backbone alternates '
                         f'Grapher and FFN, an even number of entries; found {num_blocks}')
    arch = _match_arch(channels, grid, num_blocks // 2)
    _refuse_dense_mlp(state_dict, arch, channels)
    rules = key_rules(num_blocks // 2)
    _check_keys(state_dict, [rule.authors for rule in rules],
                f"the state dict of the authors' {AUTHORS_MODELS[arch]}")
    num_classes = _num_classes(state_dict, 'head.weight')
    shapes = mmcvig_shapes(arch, num_classes)
    _check_rules(rules, shapes)
    converted = {}
    for rule in rules:
        tensor = state_dict[rule.authors]
        _check_shape(rule.authors, tensor, authors_shape(rule.kind, shapes[rule.mmcvig]))
        converted[rule.mmcvig] = TO_MMCVIG[rule.kind](tensor)
    meta = dict(arch=arch, num_classes=num_classes, converted_from=SOURCE,
                authors_model=AUTHORS_MODELS[arch], mmcvig_version=mmcvig.__version__)
    return dict(meta=meta, state_dict=OrderedDict((name, converted[name]) for name in shapes))


def convert_to_authors(checkpoint) -> Dict[str, Tensor]:
    """An mmcvig classifier checkpoint (or state dict) -> the state dict of the authors'
    model of the same variant (a teacher saved with it is left out).

    Raises:
        ValueError: naming the key, for anything that is not the state dict of a
            classifier the configs build.
    """
    state_dict = {key: value for key, value in plain_state_dict(checkpoint).items()
                  if not key.startswith(NOT_STUDENT)}
    if 'pos_embed' in state_dict:
        raise ValueError("pos_embed: this is in the authors' layout already (convert it to "
                         'mmcvig without --reverse)')
    pos_embed = _pos_embed(state_dict, 'backbone.pos_embed')
    num_blocks = _num_blocks(state_dict, r'backbone\.blocks\.(\d+)\.')
    arch = _match_arch(pos_embed.shape[1], pos_embed.shape[-1], num_blocks)
    rules = key_rules(num_blocks)
    _check_keys(state_dict, [rule.mmcvig for rule in rules],
                f"the state dict of mmcvig's '{arch}' classifier (backbone and head)")
    shapes = mmcvig_shapes(arch, _num_classes(state_dict, 'head.fc.weight'))
    _check_rules(rules, shapes)
    converted = OrderedDict()
    for rule in rules:
        tensor = state_dict[rule.mmcvig]
        _check_shape(rule.mmcvig, tensor, shapes[rule.mmcvig])
        converted[rule.authors] = TO_AUTHORS[rule.kind](tensor)
    return converted


def load(path: str):
    """A checkpoint file, loaded as the untrusted input it is (tensors and plain
    containers only; mmcvig allow-lists what mmengine's own checkpoints add)."""
    return torch.load(path, map_location='cpu', weights_only=True)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Convert a ClusterViG checkpoint of the authors' code to an mmcvig "
        'classifier checkpoint (or back, with --reverse)')
    parser.add_argument('src', help="the authors' checkpoint (mmcvig's with --reverse)")
    parser.add_argument('dst', help='where to write the converted checkpoint')
    parser.add_argument('--reverse', action='store_true',
                        help="mmcvig -> the authors' layout (a bare state dict)")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        if args.reverse:
            converted = convert_to_authors(load(args.src))
            summary = f"{len(converted)} tensors in the authors' layout"
        else:
            converted = convert(load(args.src))
            meta = converted['meta']
            summary = (f"{meta['authors_model']} -> mmcvig '{meta['arch']}', "
                       f"{len(converted['state_dict'])} tensors")
    except ValueError as error:
        raise SystemExit(f'{osp.basename(__file__)}: {args.src}: {error}')
    os.makedirs(osp.dirname(osp.abspath(args.dst)), exist_ok=True)
    torch.save(converted, args.dst)
    print(f'{summary}: {args.dst}')


if __name__ == '__main__':
    main()
