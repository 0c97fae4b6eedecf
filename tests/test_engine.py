"""mmcvig.engine.CPUAmpOptimWrapper: what tools/train.py --amp uses on a CPU-only machine."""
import pytest
import torch
import torch.nn as nn
from mmengine.optim import AmpOptimWrapper

from mmcvig.engine import CPUAmpOptimWrapper


@pytest.mark.skipif(torch.cuda.is_available(), reason='the CPU-only case')
def test_mmengine_amp_refuses_the_cpu():
    # Why CPUAmpOptimWrapper exists; when mmengine lifts this, drop it.
    model = nn.Linear(4, 2)
    with pytest.raises(AssertionError, match='only available training on gpu'):
        AmpOptimWrapper(optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                        dtype='bfloat16')


def test_forward_in_bfloat16_update_in_float32():
    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    before = model.weight.detach().clone()
    wrapper = CPUAmpOptimWrapper(optimizer=torch.optim.SGD(model.parameters(), lr=0.1))

    with wrapper.optim_context(model):
        outputs = model(torch.randn(3, 4))
    assert outputs.dtype == torch.bfloat16
    wrapper.update_params(outputs.float().pow(2).mean())

    assert model.weight.dtype == torch.float32
    assert not torch.equal(model.weight, before)
