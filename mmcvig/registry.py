"""One registration path for the OpenMMLab stacks mmcvig serves.

Detection configs (``default_scope='mmdet'``) build from ``mmdet.registry.MODELS``,
classification configs (``default_scope='mmpretrain'``) from
``mmpretrain.registry.MODELS`` and semantic segmentation configs (``default_scope='mmseg'``)
from ``mmseg.registry.MODELS``. A module decorated with :func:`register_model` is put in
each, under the same name, so a config reaches it with
``custom_imports=dict(imports=['mmcvig'])`` whichever scope it uses.

mmsegmentation is optional: without it mmcvig still imports (and serves mmdet and
mmpretrain), as on the GPU machines, which carry only the wheels of
``tools/gpu_wheels.sh``. An mmseg that is installed but fails to import (its mmcv version
check, say) raises here, instead of leaving every segmentation config to fail later with
``ClusterViG is not in the mmseg::model registry``.
"""
from mmdet.registry import MODELS as MMDET_MODELS
from mmpretrain.registry import MODELS as MMPRETRAIN_MODELS

try:
    from mmseg.registry import MODELS as MMSEG_MODELS
except ModuleNotFoundError as error:
    if error.name != 'mmseg':  # mmseg is there, but something it needs is not
        raise
    MMSEG_MODELS = None

REGISTRIES = tuple(registry for registry in (MMDET_MODELS, MMPRETRAIN_MODELS, MMSEG_MODELS)
                   if registry is not None)


def register_model(cls=None, *, registries=REGISTRIES):
    """Class decorator: register ``cls`` in every registry of ``registries``."""

    def _register(module_cls):
        for registry in registries:
            registry.register_module(module=module_cls)
        return module_cls

    return _register if cls is None else _register(cls)
