from .ddp import CPUDistributedDataParallel
from .optim_wrapper import CPUAmpOptimWrapper
from .rng_state_hook import RNGStateHook

__all__ = ['CPUAmpOptimWrapper', 'CPUDistributedDataParallel', 'RNGStateHook']
