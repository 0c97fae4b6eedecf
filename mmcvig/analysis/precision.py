"""How far mixed precision moves a backbone's output from float32.

Every candidate runs the same images in float32 and under float16 and bfloat16 autocast;
the error is the relative L2 distance of the last output map. Randomly initialised
networks have no trained statistics, so each model is measured twice:

* ``as built``: BatchNorm with its initial running statistics (mean 0, variance 1), an
  identity in eval mode; activations then grow or shrink block after block at the rate
  the initialisation gives, in float32 too (the column ``float32 max``);
* ``calibrated``: the running statistics of every BatchNorm set from the batch itself
  (one train-mode forward, cumulative average), so every layer sees normalised inputs
  as in a trained network.

Partitions and k-NN graphs follow the tokens: where autocast rounds DEGC's input (the
output of the 1x1 convolution before it), tokens near a cluster boundary or a
neighbour tie change sides, however exactly DEGC itself computes.
"""
import contextlib
from typing import Dict, List, Sequence

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

# Autocast reaching DEGC's float32 steps, as before they kept float32: only to measure
# what keeping them costs.
from ..models.degc.execution import autocast_reaches_degc
from .detection import PRETRAIN_SIZE
from .models import Candidate
from .timing import Runner, paired_ratio, round_robin, summarize

AUTOCAST_DTYPES = {'float16': torch.float16, 'bfloat16': torch.bfloat16}
BN_SETTINGS = ('as built', 'calibrated')


def calibrate_norms(model: nn.Module, x: Tensor) -> nn.Module:
    """Set every BatchNorm's running statistics from one train-mode forward of ``x``;
    the model is left in eval mode."""
    for module in model.modules():
        if isinstance(module, _BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # cumulative average: the batch's own statistics
    model.train()
    with torch.no_grad():
        model(x)
    model.eval()
    return model


def _last_output(model: nn.Module, x: Tensor) -> Tensor:
    outs = model(x)
    return (outs[-1] if isinstance(outs, (tuple, list)) else outs).float()


def largest_activation(model: nn.Module, x: Tensor) -> float:
    """Largest magnitude any module outputs in a float32 forward of ``x``."""
    largest = [0.0]

    def record(module, inputs, output):
        if isinstance(output, Tensor) and output.is_floating_point():
            largest[0] = max(largest[0], float(output.detach().abs().max()))

    handles = [m.register_forward_hook(record) for m in model.modules()]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    return largest[0]


def relative_errors(model: nn.Module, x: Tensor, dtypes: Sequence[str]) -> Dict[str, float]:
    """``{dtype: ||out_amp - out_fp32|| / ||out_fp32||}``, ``nan`` where the autocast
    output is not finite."""
    with torch.no_grad():
        reference = _last_output(model, x)
        errors = {}
        for name in dtypes:
            with torch.autocast(x.device.type, dtype=AUTOCAST_DTYPES[name]):
                out = _last_output(model, x)
            finite = bool(torch.isfinite(out).all())
            errors[name] = (float((out - reference).norm() / reference.norm())
                            if finite else float('nan'))
    return errors


def measure_autocast_error(runner: Runner, candidates: List[Candidate], img_size: int,
                           batch: int = 2,
                           dtypes: Sequence[str] = tuple(AUTOCAST_DTYPES)) -> List[dict]:
    """One row per candidate and BatchNorm setting (see the module docstring)."""
    x = runner.inputs(batch, img_size, img_size)
    rows = []
    for candidate in candidates:
        model = runner.model(candidate.make, img_size, eager=True)
        for setting in BN_SETTINGS:
            if setting == 'calibrated':
                calibrate_norms(model, x)
            row = dict(model=candidate.name, family=candidate.family, bn=setting,
                       img_size=img_size, batch=batch,
                       float32_max=largest_activation(model, x))
            row.update({f'error_{name}': err
                        for name, err in relative_errors(model, x, dtypes).items()})
            rows.append(row)
        del model
    return rows


def measure_float32_overhead(runner: Runner, candidate: Candidate, height: int, width: int,
                             warmup: int = 2, repeats: int = 5) -> dict:
    """Inference time under autocast with DEGC's float32 steps as shipped, against the
    same forward with autocast reaching them, round-robin in one process.

    Returns:
        dict: both timings, and ``overhead_share``: the float32 steps' extra time as a
        share of the shipped forward.
    """
    amp_runner = Runner(str(runner.device), amp=True, seed=runner.seed)
    model = amp_runner.model(candidate.make, PRETRAIN_SIZE, eager=True)
    x = amp_runner.inputs(1, height, width)

    def forward(low_precision: bool):
        def run():
            with autocast_reaches_degc() if low_precision else contextlib.nullcontext():
                amp_runner.forward(model, x)
            amp_runner.sync()
        return run

    times = round_robin(amp_runner, dict(shipped=forward(False), low=forward(True)),
                        warmup, repeats)
    shipped, low = (summarize(times[name])['median_s'] for name in ('shipped', 'low'))
    return dict(model=candidate.name, height=height, width=width,
                dtype=str(amp_runner.autocast().fast_dtype).replace('torch.', ''),
                shipped_s=shipped, low_precision_s=low,
                overhead_share=(shipped - low) / shipped,
                paired=paired_ratio(times['shipped'], times['low']))
