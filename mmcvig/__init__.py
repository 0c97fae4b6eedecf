from . import compat
from .version import __version__

compat.apply_compat()  # before anything loads a checkpoint: see mmcvig/compat.py
from . import engine, models  # noqa: F401,E402  (register hooks, wrappers and models)

__all__ = ['__version__']
