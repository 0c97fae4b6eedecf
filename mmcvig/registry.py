"""One registration path for the two OpenMMLab stacks mmcvig serves.

Detection configs (``default_scope='mmdet'``) build from ``mmdet.registry.MODELS`` and
classification configs (``default_scope='mmpretrain'``) from ``mmpretrain.registry.MODELS``.
A module decorated with :func:`register_model` is put in both, under the same name, so a
config reaches it with ``custom_imports=dict(imports=['mmcvig'])`` whichever scope it uses.
"""
from mmdet.registry import MODELS as MMDET_MODELS
from mmpretrain.registry import MODELS as MMPRETRAIN_MODELS

REGISTRIES = (MMDET_MODELS, MMPRETRAIN_MODELS)


def register_model(cls=None, *, registries=REGISTRIES):
    """Class decorator: register ``cls`` in every registry of ``registries``."""

    def _register(module_cls):
        for registry in registries:
            registry.register_module(module=module_cls)
        return module_cls

    return _register if cls is None else _register(cls)
