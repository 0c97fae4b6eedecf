"""The models the benchmarks compare, as named, buildable candidates.

* ClusterViG of any arch, isotropic (classification) or as the detection configs build
  it (pyramid backbone, ``configs/mask-rcnn_cvig-*_fpn_1x_coco.py``);
* mmpretrain's ``Vig`` (k-NN over all tokens) and ``PyramidVig`` of the same size
  (paper Table VI);
* mmdet's ResNet-50, Swin-T and PVTv2-b2 backbones, each built from the mmdet config
  that trains it, for the detection-scale tables;
* the backbone of any config file.

A :class:`Candidate` builds its model on demand (``make(img_size)``), so a benchmark
holds only the models it runs and every model is built for the size it is timed at.
"""
import math
import os.path as osp
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence, Union

import torch
from mmengine.config import Config
from mmengine.hub import get_config
from mmengine.registry import DefaultScope
from torch import nn

from ..models import ClusterViG

# Paper naming of the sizes; the peers use the same suffix.
SIZE_SUFFIX = {'tiny': 'Ti', 'small': 'S', 'base': 'B', 'base-hr': 'B-HR'}
# mmpretrain arch of the peers matching each ClusterViG arch (base-hr has no own peer).
PEER_ARCH = {'tiny': 'tiny', 'small': 'small', 'base': 'base', 'base-hr': 'base'}
PEERS = ('vig', 'pvig')

PROJECT_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
# The detection config of every ClusterViG size; other archs (and custom dicts) take
# the CViG-S config's backbone with their arch.
CVIG_DETECTION_CONFIGS = {
    'tiny': 'configs/mask-rcnn_cvig-ti_fpn_1x_coco.py',
    'small': 'configs/mask-rcnn_cvig-s_fpn_1x_coco.py',
    'base': 'configs/mask-rcnn_cvig-b_fpn_1x_coco.py',
}
# mmdet's own backbones at detection scale, from the configs that train them.
DETECTION_PEERS = {
    'ResNet-50': 'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    'Swin-T': 'mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py',
    'PVTv2-b2': 'mmdet::pvt/retinanet_pvtv2-b2_fpn_1x_coco.py',
}


@dataclass
class Candidate:
    """A model to measure.

    Attributes:
        name (str): label in every table.
        family (str): 'cvig' (ours), 'vig', 'pvig' (mmpretrain peers) or 'backbone'
            (any other backbone).
        size (str, optional): mmpretrain-style size of the peers it is compared with.
        make (callable): ``make(img_size) -> nn.Module``, freshly built (train mode).
        info (dict): how it was built, for the result files.
    """
    name: str
    family: str
    size: Optional[str]
    make: Callable[[int], nn.Module]
    info: dict = field(default_factory=dict)


def _resize_pos_embed(model: nn.Module, img_size: int, stride: int) -> nn.Module:
    """Give a Vig/PyramidVig the positional embedding of an ``img_size`` grid.

    mmpretrain builds them for 224 only (``x = stem(x) + pos_embed`` fails at any other
    size). They are randomly initialised here, so a zero embedding of the right shape is
    the model built for that resolution.
    """
    grid = math.ceil(img_size / stride)
    if model.pos_embed.shape[-1] != grid:
        channels = model.pos_embed.shape[1]
        model.pos_embed = nn.Parameter(torch.zeros(1, channels, grid, grid))
    return model


def peer_candidates(size: str) -> List[Candidate]:
    """mmpretrain's Vig (isotropic, k-NN over all tokens) and PyramidVig of ``size``."""
    from mmpretrain.models import PyramidVig, Vig
    suffix = SIZE_SUFFIX[size]
    return [
        Candidate(f'Vig-{suffix}', 'vig', size,
                  lambda s: _resize_pos_embed(Vig(size), s, stride=16)),
        Candidate(f'PViG-{suffix}', 'pvig', size,
                  lambda s: _resize_pos_embed(PyramidVig(size), s, stride=4)),
    ]


def cvig_candidate(arch: Union[str, dict], options: Optional[dict] = None,
                   name: Optional[str] = None) -> Candidate:
    """Isotropic ClusterViG of ``arch`` (a name or a dict) with constructor ``options``."""
    options = dict(options or {})
    if isinstance(arch, str):
        name, size = name or f'CViG-{SIZE_SUFFIX[arch]}', PEER_ARCH[arch]
    else:
        name, size = name or 'CViG-custom', None
    return Candidate(name, 'cvig', size, lambda s: ClusterViG(arch, img_size=s, **options),
                     info=dict(arch=arch, **options))


def with_peers(candidates: List[Candidate], peers: Sequence[str],
               peer_size: Optional[str] = None) -> List[Candidate]:
    """``candidates`` followed by the requested peers (``'vig'``, ``'pvig'``) of every
    size they cover, or of ``peer_size``."""
    sizes = [peer_size] if peer_size else [c.size for c in candidates if c.size]
    out = list(candidates)
    for size in dict.fromkeys(sizes):  # ordered, unique
        out += [p for p in peer_candidates(size) if p.family in peers]
    return out


def scaling_candidates(candidates: List[Candidate], cluster_size: Optional[int],
                       peers: Sequence[str] = ('vig', ),
                       peer_size: Optional[str] = None) -> List[Candidate]:
    """Every ClusterViG as given and, with ``cluster_size``, with kappa following the
    tokens; plus Vig (the k-NN over all tokens) of each size if asked for."""
    out = []
    for c in candidates:
        out.append(c)
        if c.family == 'cvig' and cluster_size and 'arch' in c.info:
            options = {k: v for k, v in c.info.items() if k != 'arch'}
            options['cluster_size'] = cluster_size
            out.append(cvig_candidate(c.info['arch'], options,
                                      name=f'{c.name} cs{cluster_size}'))
    return with_peers(out, [p for p in peers if p == 'vig'], peer_size)


def _resolve(path: str) -> str:
    """A config path as given, else relative to the project root (``configs/...``)."""
    if path.startswith('mmdet::') or osp.exists(path):
        return path
    return osp.join(PROJECT_ROOT, path)


def backbone_cfg_of(path: str, options: Optional[dict] = None) -> dict:
    """``model.backbone`` of a config (or ``model`` if that is a backbone), without its
    ``init_cfg``: benchmarks use random weights and no checkpoint exists here."""
    path = _resolve(path)
    # mmengine reads 'package::' configs through its hub, files directly.
    cfg = get_config(path) if '::' in path else Config.fromfile(path)
    backbone = cfg.model.get('backbone', cfg.model).to_dict()
    backbone.pop('init_cfg', None)
    backbone.update(options or {})
    return dict(backbone=backbone, scope=cfg.get('default_scope', 'mmdet'))


def build_backbone(backbone: dict, scope: str) -> nn.Module:
    """Build a backbone dict in the registry of ``scope`` ('mmdet' or 'mmpretrain')."""
    if scope == 'mmdet':
        from mmdet.registry import MODELS
    else:
        from mmpretrain.registry import MODELS
    # A scope for the build only: the global default scope is left as it was.
    with DefaultScope.overwrite_default_scope(scope):
        return MODELS.build(dict(backbone))


def config_candidate(path: str, options: Optional[dict] = None, name: Optional[str] = None,
                     family: Optional[str] = None) -> Candidate:
    """The backbone of the config at ``path`` (a file, or ``mmdet::...``).

    A ClusterViG gets ``img_size`` from the size it is built for; any other backbone is
    built as configured.
    """
    spec = backbone_cfg_of(path, options)
    backbone = spec['backbone']
    arch = backbone.get('arch')
    arch = arch if isinstance(arch, str) else None  # a custom (dict) arch has no peers
    is_cvig = backbone.get('type') == 'ClusterViG'
    family = family or ('cvig' if is_cvig else 'backbone')
    size = PEER_ARCH.get(arch) if is_cvig else (arch if arch in PEER_ARCH.values() else None)
    stem = osp.splitext(osp.basename(path))[0]

    def make(img_size: int) -> nn.Module:
        built = dict(backbone, img_size=img_size) if is_cvig else backbone
        return build_backbone(built, spec['scope'])

    return Candidate(name or f'{backbone.get("type")}({stem})', family, size, make,
                     info=dict(config=path, backbone=backbone))


def detection_cvig_candidate(arch: Union[str, dict],
                             options: Optional[dict] = None) -> Candidate:
    """ClusterViG as the detection config of its size builds it (pyramid backbone);
    sizes without a config, and custom dict archs, use the CViG-S config's backbone."""
    options = dict(options or {})
    if isinstance(arch, str) and arch in CVIG_DETECTION_CONFIGS:
        path = CVIG_DETECTION_CONFIGS[arch]
    else:
        path = CVIG_DETECTION_CONFIGS['small']
        options['arch'] = arch
    name = f'CViG-{SIZE_SUFFIX[arch]}' if isinstance(arch, str) else 'CViG-custom'
    return config_candidate(path, options, name=name, family='cvig')


def detection_candidates(archs: Sequence[Union[str, dict]],
                         peers: Sequence[str] = tuple(DETECTION_PEERS),
                         options: Optional[dict] = None) -> List[Candidate]:
    """ClusterViG of every arch (as detection configs build it) then mmdet's backbones
    named in ``peers`` (keys of :data:`DETECTION_PEERS`)."""
    unknown = set(peers) - set(DETECTION_PEERS)
    if unknown:
        raise KeyError(f'Unknown detection peers {sorted(unknown)}; expected some of '
                       f'{list(DETECTION_PEERS)}')
    ours = [detection_cvig_candidate(arch, options) for arch in archs]
    return ours + [config_candidate(DETECTION_PEERS[p], name=p) for p in peers]
