"""Distributed data parallel that also runs on the CPU (gloo)."""
from mmengine.logging import print_log
from mmengine.model import MMDistributedDataParallel, revert_sync_batchnorm
from mmengine.registry import MODEL_WRAPPERS
from torch.nn import SyncBatchNorm


@MODEL_WRAPPERS.register_module()
class CPUDistributedDataParallel(MMDistributedDataParallel):
    """``MMDistributedDataParallel`` that drops ``device_ids`` for a CPU module.

    mmengine 0.10.7's Runner always passes ``device_ids=[LOCAL_RANK]``, which torch's DDP
    refuses for a module on the CPU ("device_ids ... only work with ... GPU modules").
    ``SyncBatchNorm`` (GPU only in torch) becomes per-process ``BatchNorm`` there, with a
    warning. On a GPU module this class behaves exactly as its parent. ``tools/train.py``
    selects it, with the gloo backend, when launched distributed on a machine without GPU.
    """

    def __init__(self, module, device_ids=None, **kwargs):
        on_cpu = all(p.device.type == 'cpu' for p in module.parameters())
        if on_cpu:
            device_ids = None
            if any(isinstance(m, SyncBatchNorm) for m in module.modules()):
                print_log('SyncBN runs on GPUs only: using per-process BN on the CPU',
                          logger='current', level=30)
                module = revert_sync_batchnorm(module)
        super().__init__(module=module, device_ids=device_ids, **kwargs)
