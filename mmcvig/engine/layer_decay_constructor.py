"""Layer-wise learning-rate decay for detectors with an isotropic backbone (ViTDet)."""
from typing import List, Optional, Union

from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.optim import DefaultOptimWrapperConstructor, OptimWrapper
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS
from torch import nn

BACKBONE = 'backbone.'


# In mmengine's root registry, as the other engine classes: mmdet's and mmpretrain's
# registries fall back to it from any default_scope.
@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class LayerDecayOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """mmengine's default constructor (``custom_keys``, ``norm_decay_mult``,
    ``bias_decay_mult``, ... all apply) plus layer-wise lr decay of the backbone.

    mmpretrain's ``LearningRateDecayOptimWrapperConstructor`` asks the model itself for
    the depth of a parameter, which a detector cannot tell. This one asks the backbone:
    every ``backbone.*`` parameter gets its depth from
    ``model.backbone.get_layer_depth(name without 'backbone.')``, which returns
    ``(depth, num_layers)`` (for :class:`~mmcvig.models.ClusterViG`: stem and pos_embed
    0, block ``i`` ``i + 1``, anything after the blocks ``num_layers - 1``). The neck and
    heads get the top depth ``num_layers - 1``. A parameter at depth ``d`` trains at

        ``lr * layer_decay_rate ** (num_layers - 1 - d)``

    times any ``lr_mult`` of the other rules: the top (neck, heads and what the backbone
    puts after its blocks, such as ClusterViG's pyramid adapter) at the base lr, the last
    block at ``lr * rate``, the stem and pos_embed at ``lr * rate ** (num_blocks + 1)``.
    This is ViTDet's ``lr_decay_rate ** (num_layers + 1 - layer_id)`` with its
    ``num_layers`` the number of blocks. The weight decay rules are untouched.

    Usable from any mmdet (or mmpretrain) config::

        optim_wrapper = dict(
            constructor='LayerDecayOptimWrapperConstructor',
            paramwise_cfg=dict(layer_decay_rate=0.7, norm_decay_mult=0., ...))

    Args:
        optim_wrapper_cfg (dict): the ``optim_wrapper`` config.
        paramwise_cfg (dict): mmengine's paramwise options and ``layer_decay_rate``
            (float in (0, 1]).
    """

    def __init__(self, optim_wrapper_cfg: dict, paramwise_cfg: Optional[dict] = None):
        # Left in paramwise_cfg, which the parent's rules ignore: a non-empty
        # paramwise_cfg is what makes the parent build per-parameter groups.
        if not paramwise_cfg or 'layer_decay_rate' not in paramwise_cfg:
            raise ValueError('LayerDecayOptimWrapperConstructor needs '
                             'optim_wrapper.paramwise_cfg.layer_decay_rate')
        self.layer_decay_rate = float(paramwise_cfg['layer_decay_rate'])
        if not 0 < self.layer_decay_rate <= 1:
            raise ValueError(f'layer_decay_rate must be in (0, 1], got '
                             f'{self.layer_decay_rate}')
        super().__init__(optim_wrapper_cfg, paramwise_cfg)
        if self.base_lr is None:
            raise ValueError('layer-wise lr decay needs optim_wrapper.optimizer.lr')

    def __call__(self, model: nn.Module) -> OptimWrapper:
        if is_model_wrapper(model):
            model = model.module
        backbone = getattr(model, 'backbone', None)
        if not hasattr(backbone, 'get_layer_depth'):
            raise TypeError(f'layer-wise lr decay needs model.backbone.get_layer_depth(); '
                            f'{type(backbone).__name__} has none')
        return super().__call__(model)

    def lr_scale(self, name: str, backbone: nn.Module) -> float:
        """The lr factor of the parameter ``name`` (as ``model.named_parameters()``
        names it)."""
        depth, num_layers = backbone.get_layer_depth(name, prefix=BACKBONE)
        if not name.startswith(BACKBONE):  # neck, heads: the top
            depth = num_layers - 1
        return self.layer_decay_rate**(num_layers - 1 - depth)

    def add_params(self, params: List[dict], module: nn.Module, prefix: str = '',
                   is_dcn_module: Union[int, float, None] = None) -> None:
        if prefix:  # the parent's recursion into submodules
            return super().add_params(params, module, prefix, is_dcn_module)
        groups: List[dict] = []
        super().add_params(groups, module, prefix, is_dcn_module)
        names = {id(p): n for n, p in module.named_parameters()}
        scales = {}
        for group in groups:
            name = names[id(group['params'][0])]
            scale = self.lr_scale(name, module.backbone)
            group['lr'] = group.get('lr', self.base_lr) * scale
            group['lr_scale'] = scale  # kept for the logs and tests; optimizers ignore it
            scales.setdefault(scale, []).append(name)
        params.extend(groups)
        for scale in sorted(scales):
            print_log(f'layer-wise lr decay: x{scale:.4g} for {len(scales[scale])} '
                      f'parameters (e.g. {scales[scale][0]})', logger='current')
