from .version import __version__
from . import compat
compat.apply_compat()  # before anything loads a checkpoint: see mmcvig/compat.py
from . import models  # noqa: F401,E402  (registers the modules in mmdet's and mmpretrain's MODELS)

__all__ = ['__version__']
