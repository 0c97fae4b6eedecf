from contextlib import contextmanager

import torch
from mmengine.optim import OptimWrapper
from mmengine.registry import OPTIM_WRAPPERS
from mmengine.runner.amp import autocast


@OPTIM_WRAPPERS.register_module()
class CPUAmpOptimWrapper(OptimWrapper):
    """Automatic mixed precision on the CPU: forward passes autocast to bfloat16.

    mmengine 0.10.7's ``AmpOptimWrapper`` refuses to be built without a GPU (or NPU, MLU,
    MUSA), whatever its ``dtype``; ``tools/train.py --amp`` picks this wrapper instead on
    a CPU-only machine. bfloat16 has float32's exponent range, so small gradients do not
    underflow and, unlike float16, need no loss scaling: backward and step are
    ``OptimWrapper``'s own. Registered in mmengine's root registry, so configs of either
    scope find it by name once ``mmcvig.engine`` is imported.
    """

    @contextmanager
    def optim_context(self, model):
        with super().optim_context(model), autocast(device_type='cpu', dtype=torch.bfloat16):
            yield
