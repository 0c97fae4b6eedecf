from .ddp import CPUDistributedDataParallel
from .layer_decay_constructor import LayerDecayOptimWrapperConstructor
from .optim_wrapper import CPUAmpOptimWrapper
from .rng_state_hook import RNGStateHook

__all__ = [
    'CPUAmpOptimWrapper', 'CPUDistributedDataParallel', 'LayerDecayOptimWrapperConstructor',
    'RNGStateHook'
]
