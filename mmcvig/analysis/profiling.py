"""Where a ClusterViG forward spends its time, from what the model itself reports.

Two public sources, nothing patched:

* ``torch.profiler``: every DEGC step runs inside a ``record_function`` range named
  ``degc.partition``, ``degc.build_graph``, ``degc.global_update`` and
  ``degc.local_update`` (see :class:`~mmcvig.models.degc.DEGC`). A step's time is the
  sum of its ranges over the blocks of one forward; the rest of the forward (stem,
  CPE, FC1/FC2, FFN, pos_embed: the dense convolutions) is ``other``. On the CPU a
  range's time is its wall time (operators and the Python between them); on a GPU it
  is the device time of the kernels its operators launched. An operator table ranks
  the operators of every step by self time.
* ``forward(x, return_intermediates=True)``: the partition of every block, hence its
  k-means iteration count (``Partition.iters``), token count and :math:`\\kappa`.

The profiler adds a little time per operator, so the shares are of the profiled
forward; ``total_ms`` is the median of unprofiled forwards of the same input.
"""
from collections import defaultdict
from functools import partial
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from torch import Tensor, nn
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile, record_function

from .models import Candidate
from .timing import Runner, round_robin, warm_up

DEGC_STEPS = ('partition', 'build_graph', 'global_update', 'local_update')
OTHER = 'other'  # everything outside the DEGC steps: the dense convolutions
STEP_PREFIX = 'degc.'
FORWARD_RANGE = 'mmcvig.analysis.forward'  # one profiled forward


def _enclosing(event) -> Tuple[Optional[object], str]:
    """The profiled forward an event ran in (None: outside any) and its DEGC step."""
    step, parent = OTHER, event.cpu_parent
    while parent is not None:
        if step == OTHER and parent.name.startswith(STEP_PREFIX):
            step = parent.name[len(STEP_PREFIX):]
        if parent.name == FORWARD_RANGE:
            return parent, step
        parent = parent.cpu_parent
    return None, step


def _is_operator(event) -> bool:
    return (event.device_type == DeviceType.CPU and event.name != FORWARD_RANGE
            and not event.name.startswith(STEP_PREFIX))


def step_times(events, on_gpu: bool = False) -> List[Dict[str, float]]:
    """Microseconds of every DEGC step, ``other`` and ``total``, per profiled forward
    (events of a ``torch.profiler`` run whose forwards ran inside :data:`FORWARD_RANGE`).
    """
    forwards = sorted((e for e in events if e.name == FORWARD_RANGE),
                      key=lambda e: e.time_range.start)
    index = {id(e): i for i, e in enumerate(forwards)}
    per_forward = [defaultdict(float) for _ in forwards]
    for event in events:
        forward, step = _enclosing(event)
        if forward is None:
            continue
        record = per_forward[index[id(forward)]]
        if on_gpu and _is_operator(event):
            record[step] += event.self_device_time_total
        elif not on_gpu and event.name.startswith(STEP_PREFIX):
            record[event.name[len(STEP_PREFIX):]] += event.cpu_time_total
    out = []
    for forward, record in zip(forwards, per_forward):
        total = sum(record.values()) if on_gpu else forward.cpu_time_total
        steps = {s: record.get(s, 0.0) for s in DEGC_STEPS}
        out.append(dict(steps, **{OTHER: total - sum(steps.values()), 'total': total}))
    return out


def operator_table(events, top: int, on_gpu: bool = False) -> Dict[str, Dict[str, float]]:
    """The ``top`` costliest operators of every step (and ``other``): self time in ms
    per profiled forward (CPU time; on a GPU the device time of the kernels each
    operator launched)."""
    num_forwards = max(sum(e.name == FORWARD_RANGE for e in events), 1)
    totals: Dict[str, Dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for event in events:
        if not _is_operator(event):
            continue
        forward, step = _enclosing(event)
        if forward is not None:
            us = event.self_device_time_total if on_gpu else event.self_cpu_time_total
            totals[step][event.name] += us / 1e3 / num_forwards
    return {step: dict(sorted(ops.items(), key=lambda kv: -kv[1])[:top])
            for step, ops in totals.items()}


def kmeans_iterations(intermediates: Sequence) -> List[Optional[int]]:
    """Lloyd iterations of every block's partition (None where not counted)."""
    return [None if rec.partition.iters is None else int(rec.partition.iters)
            for rec in intermediates]


def profile_degc(runner: Runner, model: nn.Module, x: Tensor, repeats: int = 5,
                 op_top: int = 0, name: str = 'model') -> dict:
    """Time split of ``repeats`` forwards of a ClusterViG on ``x`` :math:`(B, 3, H, W)`.

    Args:
        runner (Runner): device and precision.
        model (ClusterViG): in eval mode, not compiled (the profiler needs the ranges).
        x (Tensor): the input.
        repeats (int): forwards, unprofiled and profiled each.
        op_top (int): operators per step in ``operators`` (0: no table).
        name (str): the row's ``model``.

    Returns:
        dict: ``total_ms`` (median unprofiled), ``profiled_ms``, ``steps_ms`` and
        ``share`` per step and ``other`` (medians; shares of their sum, adding up to 1),
        ``tokens``, ``kappa``, ``kmeans_iterations`` per block and their mean,
        ``operators`` (or None).
    """
    plain = round_robin(runner, {name: partial(runner.forward, model, x)}, 0, repeats)[name]
    on_gpu = runner.device.type == 'cuda'
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_gpu else [])
    with profile(activities=activities) as prof:
        for _ in range(repeats):
            with record_function(FORWARD_RANGE):
                _, intermediates = runner.forward(model, x, return_intermediates=True)
                runner.sync()
    events = prof.events()
    median = {k: float(np.median([f[k] for f in step_times(events, on_gpu)])) / 1e3
              for k in (*DEGC_STEPS, OTHER, 'total')}
    steps_sum = sum(median[s] for s in (*DEGC_STEPS, OTHER))
    iters = kmeans_iterations(intermediates)
    counted = [i for i in iters if i is not None]
    first = intermediates[0].partition
    batch, _, height, width = x.shape
    return dict(model=name, height=height, width=width, batch=batch,
                tokens=first.labels.shape[1], kappa=first.counts.shape[1],
                total_ms=1e3 * float(np.median(plain)), profiled_ms=median['total'],
                steps_ms={s: median[s] for s in (*DEGC_STEPS, OTHER)},
                share={s: median[s] / steps_sum for s in (*DEGC_STEPS, OTHER)},
                kmeans_iterations=iters,
                kmeans_iterations_mean=float(np.mean(counted)) if counted else None,
                repeats=repeats,
                operators=operator_table(events, op_top, on_gpu) if op_top else None)


def measure_profile(runner: Runner, candidates: Sequence[Candidate],
                    inputs: Sequence[Tuple[int, int, int]], img_size: int = 224,
                    warmup: int = 2, repeats: int = 5, op_top: int = 0) -> List[dict]:
    """:func:`profile_degc` of every ClusterViG candidate (others are skipped) at every
    ``(height, width, batch)``; models built for ``img_size`` (pos_embed resized to
    other inputs), eager."""
    rows = []
    for c in (c for c in candidates if c.family == 'cvig'):
        model = runner.model(c.make, img_size, eager=True)
        for height, width, batch in inputs:
            x = runner.inputs(batch, height, width)
            warm_up({c.name: partial(runner.forward, model, x)}, warmup)
            rows.append(profile_degc(runner, model, x, repeats, op_top, c.name))
    return rows
