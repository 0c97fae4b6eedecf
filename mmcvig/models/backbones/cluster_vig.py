"""ClusterViG: an isotropic vision GNN built from DEGC (paper Sec. IV-C, Fig. 4)."""
import math
from typing import Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from mmcv.cnn import ConvModule
from mmcv.cnn.bricks import DropPath
from mmengine.model import BaseModule, ModuleList, Sequential
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from ...registry import register_model
from ..degc import DEGC
from ..degc.execution import exporting, keep_graphs_for_recompute, resolve_sync_free
from ..layers import bicubic_resize, conv_norm_act
from ..necks import SimplePyramid
from .padding import extent_mask, image_extent, place_pos_embed

_NOT_FINITE = 'ClusterViG input contains NaN or Inf values'


def _check_input(x: Tensor, sync_free: bool):
    """Refuse what would otherwise turn into silent garbage deep inside DEGC.

    A NaN anywhere in an image makes every k-means distance of that image NaN, so its
    partition and graph become arbitrary. One pass over the input is cheap next to the
    network, but reading its result is a host synchronisation: sync-free (the default on
    CUDA) nothing is checked, and a non-finite image gets non-finite features, every
    other image of the batch the features it gets alone (k-means and the k-NN are per
    image; no index goes out of range). A device-side assertion would instead leave the
    CUDA context unusable, with no Python exception to catch. Images from mmdet's and
    mmpretrain's pipelines are 8-bit, and their preprocessors' normalisation cannot make
    a NaN; a non-finite loss then shows what a caller's own tensor did.
    """
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f'ClusterViG expects images (B, 3, H, W), got shape {tuple(x.shape)}')
    if exporting() or sync_free:
        return
    if not torch.isfinite(x).all():
        raise ValueError(_NOT_FINITE)


class Stem(Sequential):
    """3x3 conv-BN-GELU layers, ``log2(stride)`` of them with stride 2 and the rest of four
    with stride 1, widths ``max(C // 2**(3 - i), 64)``, then a 3x3 conv-BN to ``C``.

    Args:
        out_channels (int): :math:`C`.
        stride (int): total downsampling, a power of two up to 16.
    """

    def __init__(self, out_channels: int, stride: int, in_channels: int = 3,
                 norm_cfg=dict(type='BN'), act_cfg=dict(type='GELU')):
        num_down = int(math.log2(stride))
        layers, channels = [], in_channels
        for i in range(4):
            width = max(out_channels // 2**(3 - i), 64)
            layers.append(ConvModule(channels, width, 3, stride=2 if i < num_down else 1,
                                     padding=1, bias=True, norm_cfg=norm_cfg, act_cfg=act_cfg))
            channels = width
        layers.append(ConvModule(channels, out_channels, 3, padding=1, bias=True,
                                 norm_cfg=norm_cfg, act_cfg=None))
        super().__init__(*layers)
        self.strides = [2**min(i + 1, num_down) for i in range(len(layers))]

    def forward(self, x: Tensor, extent: Optional[Tensor] = None) -> Tensor:
        """x: :math:`(B, 3, H, W)`; ``extent`` :math:`(B, 2)`, if given, zeroes each
        layer's output outside the images' own extent, as the zero padding of the next
        convolution sees an image alone."""
        for layer, stride in zip(self, self.strides):
            x = conv_norm_act(layer, x)
            if extent is not None:
                x = x * extent_mask(extent, stride, *x.shape[-2:])
        return x


class Grapher(BaseModule):
    r"""Grapher (paper Eq. 5): :math:`Y = X + \mathrm{DropPath}(\mathrm{FC_2}(
    \mathrm{DEGC}(\mathrm{FC_1}(\mathrm{CPE}(X) + X))))`.

    CPE is a 7x7 depthwise convolution; FC1/FC2 are 1x1 conv + BN. The GELU of Eq. 5 is
    the last layer of the G-GCN MLP inside DEGC.

    Args:
        channels (int): :math:`C`.
        drop_path (float): stochastic depth rate.
        **degc_kwargs: passed to :class:`DEGC`.
    """

    def __init__(self, channels: int, drop_path: float = 0., norm_cfg=dict(type='BN'),
                 act_cfg=dict(type='GELU'), init_cfg=None, **degc_kwargs):
        super().__init__(init_cfg)
        self.cpe = nn.Conv2d(channels, channels, 7, padding=3, groups=channels)
        self.fc1 = ConvModule(channels, channels, 1, bias=True, norm_cfg=norm_cfg, act_cfg=None)
        self.degc = DEGC(channels, norm_cfg=norm_cfg, act_cfg=act_cfg, **degc_kwargs)
        self.fc2 = ConvModule(2 * channels, channels, 1, bias=True, norm_cfg=norm_cfg,
                              act_cfg=None)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: Tensor, valid: Optional[Tensor] = None,
                return_intermediates: bool = False):
        """x: :math:`(B, C, H, W)` -> :math:`(B, C, H, W)`; ``valid`` and
        ``return_intermediates`` as in :meth:`DEGC.forward`."""
        out = self.degc(self.fc1(x + self.cpe(x)), valid, return_intermediates)
        if return_intermediates:
            out, intermediates = out
            return x + self.drop_path(self.fc2(out)), intermediates
        return x + self.drop_path(self.fc2(out))


class FFN(BaseModule):
    r"""FFN (paper Eq. 6): :math:`Y = X + \mathrm{DropPath}(\mathrm{BN}(W_2
    \,\mathrm{GELU}(\mathrm{BN}(W_1 X))))`, :math:`W_1: C \to 4C`, :math:`W_2: 4C \to C`."""

    def __init__(self, channels: int, ratio: int = 4, drop_path: float = 0.,
                 norm_cfg=dict(type='BN'), act_cfg=dict(type='GELU'), init_cfg=None):
        super().__init__(init_cfg)
        hidden = channels * ratio
        self.fc1 = ConvModule(channels, hidden, 1, bias=True, norm_cfg=norm_cfg, act_cfg=act_cfg)
        self.fc2 = ConvModule(hidden, channels, 1, bias=True, norm_cfg=norm_cfg, act_cfg=None)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return x + self.drop_path(self.fc2(conv_norm_act(self.fc1, x)))


class ClusterViGBlock(Sequential):
    """One isotropic block: Grapher then FFN.

    With a token ``mask`` :math:`(B, 1, H, W)` (batch padding), the output is zeroed
    outside it: the next block's CPE then sees the zero padding an image alone gets.
    """

    def __init__(self, channels: int, drop_path: float = 0., norm_cfg=dict(type='BN'),
                 act_cfg=dict(type='GELU'), **degc_kwargs):
        super().__init__(
            Grapher(channels, drop_path, norm_cfg=norm_cfg, act_cfg=act_cfg, **degc_kwargs),
            FFN(channels, drop_path=drop_path, norm_cfg=norm_cfg, act_cfg=act_cfg))

    def forward(self, x: Tensor, mask: Optional[Tensor] = None,
                return_intermediates: bool = False):
        grapher, ffn = self
        valid = None if mask is None else mask.flatten(1)
        out = grapher(x, valid, return_intermediates)
        out, intermediates = out if return_intermediates else (out, None)
        out = ffn(out)
        if mask is not None:
            out = out * mask
        return (out, intermediates) if return_intermediates else out


@register_model
class ClusterViG(BaseModule):
    """ClusterViG isotropic backbone.

    A paper of reference: "ClusterViG: Efficient Globally Aware Vision GNNs via Image
    Partitioning" (Parikh et al., 2025). ``image -> Stem -> + pos_embed -> n_b x [Grapher,
    FFN]``; the outputs are the feature maps of the blocks in ``out_indices``.

    Args:
        arch (str | dict): one of :attr:`arch_settings` ('tiny', 'small', 'base',
            'base-hr') or a dict with the same keys.
        img_size (int): size the learnable ``pos_embed`` is made for (the pretraining
            size); any other input size gets it resized bicubically.
        out_indices (int | Sequence[int]): blocks whose output is returned; negative
            values count from the end.
        drop_path_rate (float): stochastic depth, growing linearly over the blocks.
        graph_conv (str): G-GCN variant: 'mrgcn' (paper default), 'edgeconv',
            'graphsage', 'gin'.
        num_clusters (int, optional): overrides the arch's :math:`\\kappa`.
        cluster_size (int, optional): make :math:`\\kappa` follow the token count,
            ``ceil(N / cluster_size)`` (see :class:`DEGC`); ``None`` keeps it fixed.
        graph_impl (str): 'dense' (default) or 'sparse', see :class:`DEGC`.
        kmeans_init (str): 'grid' (deterministic, default) or 'random' (the paper's).
        kmeans_iters (int): at most this many k-means iterations per DEGC.
        kmeans_tol (float, optional): k-means early stop (see :func:`partition`);
            ``None`` always runs ``kmeans_iters`` iterations (static graph, for export).
        sync_free (bool, optional): no host-device synchronisation in the forward (see
            :class:`DEGC`); ``None`` (default) picks it for CUDA inputs.
        center_tokens (bool): DEGC centres every image's tokens, as the authors'
            trained models do (see :class:`DEGC`); default on.
        detach_centroids (bool): no gradient into the tokens through DEGC's centroids,
            as the authors' models train (see :class:`DEGC`); default on.
        pad_aware (bool): find the bottom-right zero padding mmdet adds to a batch (see
            :mod:`.padding`) and make every image's features what it would get alone:
            padding tokens take no part in DEGC, ``pos_embed`` is resized to each
            image's own grid and the convolutions see zeros beyond each image. For
            detection; classification batches hold no padding.
        frozen_stages (int): -1 trains everything; 0 freezes the stem and pos_embed;
            ``i > 0`` also freezes the first ``i`` blocks.
        pyramid (dict, optional): build a :class:`SimplePyramid` on the outputs (kwargs
            such as ``scales``), for FPN detectors: ``out_indices`` then names one block
            (feeding every level) or one block per level. ``None`` (classification)
            returns the isotropic maps and holds no adapter weights.
        norm_eval (bool): keep BN layers in eval mode while training.
        with_cp (bool): gradient checkpointing of every block (saves memory); the
            backward's recomputation reuses the forward's partitions and graphs.
        channels_last (bool): run the network on channels-last maps (the default): the
            1x1 and depthwise convolutions then run on oneDNN's NHWC layout without
            reordering every input and output, and DEGC's tokens :math:`(B, N, C)` are a
            view of the map. The outputs are returned in the default (NCHW) layout that
            necks, heads and mmcv's RoI ops expect. Same weights, same math.
        norm_cfg (dict), act_cfg (dict): normalisation and activation everywhere.
        init_cfg (dict | list[dict], optional): e.g. ``dict(type='Pretrained',
            checkpoint=..., prefix='backbone.')``.
    """
    # blocks, channels, kappa, MLP groups and token stride of paper Table III.
    arch_settings = {
        'tiny': dict(num_blocks=12, channels=192, num_clusters=4, groups=1, stride=16),
        'small': dict(num_blocks=16, channels=320, num_clusters=4, groups=4, stride=16),
        'base': dict(num_blocks=16, channels=640, num_clusters=4, groups=4, stride=16),
        'base-hr': dict(num_blocks=16, channels=640, num_clusters=6, groups=4, stride=8),
    }
    # K grows linearly over the blocks from k_min to k_max (paper Sec. IV-C).
    k_range = (9, 18)

    def __init__(self, arch: Union[str, dict] = 'tiny', img_size: int = 224,
                 out_indices: Union[int, Sequence[int]] = -1, drop_path_rate: float = 0.,
                 graph_conv: str = 'mrgcn', num_clusters: int = None,
                 cluster_size: int = None, graph_impl: str = 'dense',
                 kmeans_init: str = 'grid', kmeans_iters: int = 20,
                 kmeans_tol: float = 0.0, sync_free: Optional[bool] = None,
                 center_tokens: bool = True, detach_centroids: bool = True,
                 pad_aware: bool = False, pyramid: dict = None,
                 frozen_stages: int = -1, norm_eval: bool = False, with_cp: bool = False,
                 channels_last: bool = True, norm_cfg=dict(type='BN'),
                 act_cfg=dict(type='GELU'), init_cfg=None):
        super().__init__(init_cfg)
        self.arch = self._parse_arch(arch)
        if num_clusters is not None:
            self.arch['num_clusters'] = num_clusters
        num_blocks, channels = self.arch['num_blocks'], self.arch['channels']
        self.embed_dims = channels
        self.num_blocks = num_blocks
        self.out_indices = self._parse_out_indices(out_indices, num_blocks)
        if not -1 <= frozen_stages <= num_blocks:
            raise ValueError(f'frozen_stages must be in [-1, {num_blocks}], got {frozen_stages}')
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.with_cp = with_cp
        self.channels_last = channels_last
        self.sync_free = sync_free
        self.pad_aware = pad_aware

        stride = self.arch['stride']
        self.stem = Stem(channels, stride, norm_cfg=norm_cfg, act_cfg=act_cfg)
        grid = img_size // stride
        self.pos_embed = nn.Parameter(torch.zeros(1, channels, grid, grid))

        ks = np.linspace(*self.arch.get('k_range', self.k_range), num_blocks).astype(int)
        drop_paths = np.linspace(0, drop_path_rate, num_blocks)
        self.blocks = ModuleList([
            ClusterViGBlock(channels, float(dp), norm_cfg=norm_cfg, act_cfg=act_cfg,
                            num_clusters=self.arch['num_clusters'], k=int(k),
                            cluster_size=cluster_size,
                            groups=self.arch['groups'], graph_conv=graph_conv,
                            graph_impl=graph_impl, kmeans_init=kmeans_init,
                            kmeans_iters=kmeans_iters, kmeans_tol=kmeans_tol,
                            sync_free=sync_free, center_tokens=center_tokens,
                            detach_centroids=detach_centroids)
            for k, dp in zip(ks, drop_paths)
        ])
        self.pyramid = None
        if pyramid is not None:
            self.pyramid = SimplePyramid(channels, **pyramid)
            if len(self.out_indices) not in (1, len(self.pyramid.levels)):
                raise ValueError(
                    f'out_indices {out_indices} must name 1 block or one per pyramid level '
                    f'({len(self.pyramid.levels)} levels, scales {self.pyramid.scales})')
        self._freeze_stages()

    @property
    def out_channels(self) -> list:
        """Channels of every output map (what an FPN's ``in_channels`` must be)."""
        if self.pyramid is not None:
            return list(self.pyramid.out_channels)
        return [self.embed_dims] * len(self.out_indices)

    def _parse_arch(self, arch) -> dict:
        if isinstance(arch, str):
            if arch not in self.arch_settings:
                raise KeyError(f'Unknown arch {arch!r}; expected one of '
                               f'{sorted(self.arch_settings)} or a dict')
            return dict(self.arch_settings[arch])
        required = {'num_blocks', 'channels', 'num_clusters', 'groups', 'stride'}
        if not isinstance(arch, dict) or not required <= set(arch):
            raise ValueError(f'A custom arch must be a dict with keys {sorted(required)} '
                             f'(optionally k_range), got {arch!r}')
        stride = arch['stride']
        if stride not in (2, 4, 8, 16):
            raise ValueError(f'arch stride must be 2, 4, 8 or 16, got {stride}')
        return dict(arch)

    @staticmethod
    def _parse_out_indices(out_indices, num_blocks):
        indices = [out_indices] if isinstance(out_indices, int) else list(out_indices)
        for i in indices:
            if not -num_blocks <= i < num_blocks:
                raise ValueError(f'out_indices {out_indices} out of range: valid indices are '
                                 f'{-num_blocks}..{num_blocks - 1} for {num_blocks} blocks')
        return sorted(i % num_blocks for i in indices)

    def resized_pos_embed(self, height: int, width: int) -> Tensor:
        """``pos_embed`` at a ``height x width`` token grid (bicubic when it differs;
        two matrix products in deterministic mode, where the backward of
        ``F.interpolate``'s bicubic mode raises on CUDA)."""
        if self.pos_embed.shape[-2:] == (height, width):
            return self.pos_embed
        if torch.are_deterministic_algorithms_enabled():
            size = self.pos_embed.new_ones(1)
            return bicubic_resize(self.pos_embed, size * height, size * width, height, width)
        return F.interpolate(self.pos_embed, size=(height, width), mode='bicubic',
                             align_corners=False)

    def forward(self, x: Tensor, return_intermediates: bool = False):
        """
        Args:
            x (Tensor): :math:`(B, 3, H, W)` images, any size.
            return_intermediates (bool): also return, per block, the
                :class:`~mmcvig.models.degc.DEGCIntermediates` of its DEGC (partition,
                graph, centroids), in the spirit of PyG's ``return_attention_weights``.

        Returns:
            tuple[Tensor]: :math:`(B, C, \\lceil H/s \\rceil, \\lceil W/s \\rceil)` per out
            index, ``s`` the arch's stride; with ``pyramid``, its levels. With
            ``return_intermediates``, ``(outputs, list of intermediates)``.
        """
        sync_free = resolve_sync_free(self.sync_free, x)
        _check_input(x, sync_free)
        extent = self._padding_extent(x, sync_free)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        x = self.stem(x, extent)
        mask = None if extent is None else extent_mask(extent, self.arch['stride'],
                                                       *x.shape[-2:])
        if self.pad_aware:  # the same per-image resize whether the batch is padded or not
            full = x.new_ones((x.shape[0], 1, *x.shape[-2:]), dtype=torch.bool)
            x = x + place_pos_embed(self.pos_embed, full if mask is None else mask)
        else:
            x = x + self.resized_pos_embed(*x.shape[-2:])
        outs, intermediates = [], []
        for i, block in enumerate(self.blocks):
            if self.with_cp and x.requires_grad:
                x = cp.checkpoint(block, x, mask, return_intermediates, use_reentrant=False,
                                  context_fn=keep_graphs_for_recompute)
            else:
                x = block(x, mask, return_intermediates)
            if return_intermediates:
                x, record = x
                intermediates.append(record)
            if i in self.out_indices:
                outs.append(x)
        if self.pyramid is not None:
            outs = self.pyramid(outs, mask)
        outs = tuple(out.contiguous() for out in outs)
        return (outs, intermediates) if return_intermediates else outs

    def _padding_extent(self, x: Tensor, sync_free: bool) -> Optional[Tensor]:
        """:math:`(B, 2)` image extents with ``pad_aware``; None when nothing to mask
        (a check that reads back to the host, skipped sync-free)."""
        if not self.pad_aware:
            return None
        extent = image_extent(x)
        if not sync_free and bool((extent == extent.new_tensor(x.shape[-2:])).all()):
            return None
        return extent

    def _freeze_stages(self):
        if self.frozen_stages < 0:
            return
        frozen = [self.stem, *self.blocks[:self.frozen_stages]]
        self.pos_embed.requires_grad = False
        for module in frozen:
            module.eval()
            for param in module.parameters():
                param.requires_grad = False

    def train(self, mode: bool = True):
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for module in self.modules():
                if isinstance(module, _BatchNorm):
                    module.eval()
        return self

    def get_layer_depth(self, param_name: str, prefix: str = ''):
        """Layer id of a parameter for layer-wise lr decay (mmpretrain's
        ``LearningRateDecayOptimWrapperConstructor``): stem and pos_embed 0, block
        ``i`` is ``i + 1``, anything after the blocks ``num_blocks + 1``.

        Returns:
            tuple[int, int]: the layer depth and the number of layers.
        """
        num_layers = self.num_blocks + 2
        if not param_name.startswith(prefix):
            return num_layers - 1, num_layers
        name = param_name[len(prefix):]
        if name.startswith(('stem', 'pos_embed')):
            return 0, num_layers
        if name.startswith('blocks.'):
            return int(name.split('.')[1]) + 1, num_layers
        return num_layers - 1, num_layers
