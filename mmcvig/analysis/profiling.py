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

The profiler adds time to every operator, which at 196 tokens, where k-means runs
hundreds of tiny operators, inflates the DEGC steps several times over; the shares are
of the profiled forward, and ``total_ms`` is the median of unprofiled forwards. So a
third measure takes no profiler at all:

* :func:`isolated_step_times`: every DEGC step re-run on its own (``DEGC.step_*``) on
  the inputs each block got in one forward (captured by forward pre-hooks), timed
  round-robin with the whole forward; ``other`` is the forward minus the steps.
"""
from collections import defaultdict
from functools import partial
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor, nn
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile, record_function

from ..models.degc import DEGC
from ..models.degc.execution import resolve_sync_free
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


def knn_macs(intermediates: Sequence) -> int:
    """Multiply-adds an exact k-NN inside the partitions of one forward needs at least:
    every token against every token of its cluster, :math:`\\sum_i |V^i|^2 C` over the
    blocks and images (the masked search of small inputs computes :math:`N^2 C`)."""
    return int(sum(float(rec.partition.counts.double().square().sum()) * rec.centroids.shape[-1]
                   for rec in intermediates))


def gemm_rate(runner: Runner, size: int = 2048, repeats: int = 3) -> float:
    """Multiply-adds per second of a float32 ``size``-cube matrix product on the
    runner's device (the best of ``repeats``): what the k-NN's products can reach."""
    a = torch.randn(size, size, device=runner.device)
    warm_up({'mm': lambda: a @ a}, 1)
    best = min(runner.timed(lambda: a @ a) for _ in range(repeats))
    return size ** 3 / best


def _degc_calls(runner: Runner, model: nn.Module, x: Tensor) -> list:
    """``(degc, x, valid)`` of every DEGC call of one forward of ``model`` on ``x``."""
    calls = []

    def record(module, args):
        calls.append((module, args[0], args[1] if len(args) > 1 else None))

    hooks = [m.register_forward_pre_hook(record) for m in model.modules()
             if isinstance(m, DEGC)]
    try:
        runner.forward(model, x)
    finally:
        for hook in hooks:
            hook.remove()
    return calls


class _BlockState(NamedTuple):
    """What every DEGC step of one block needs: the block's input and the results of
    the steps before it."""
    degc: DEGC
    x: Tensor
    valid: Optional[Tensor]
    tokens: Tensor
    sync_free: bool
    part: object
    graph: object
    centroids: object


_STEPS: Dict[str, Callable[[_BlockState], object]] = {
    'partition': lambda b: b.degc.step_partition(b.tokens, b.valid, b.sync_free),
    'build_graph': lambda b: b.degc.step_build_graph(b.tokens, b.part, b.sync_free),
    'global_update': lambda b: b.degc.step_global_update(b.tokens, b.part),
    'local_update': lambda b: b.degc.step_local_update(b.x, b.tokens, b.graph,
                                                       b.centroids),
}


def _block_states(runner: Runner, calls: list) -> List[_BlockState]:
    with torch.inference_mode(), runner.autocast():
        states = []
        for degc, x, valid in calls:
            tokens = degc.step_tokens(x, valid)
            sync_free = resolve_sync_free(degc.sync_free, x)
            part = degc.step_partition(tokens, valid, sync_free)
            graph = degc.step_build_graph(tokens, part, sync_free)
            centroids = degc.step_global_update(tokens, part)
            states.append(_BlockState(degc, x, valid, tokens, sync_free, part, graph,
                                      centroids))
    return states


def _step_job(runner: Runner, step: Callable, states: List[_BlockState]):
    """Run ``step`` for every block, as the forward runs it."""
    def run():
        with torch.inference_mode(), runner.autocast():
            for state in states:
                step(state)
    return run


def isolated_step_times(runner: Runner, model: nn.Module, x: Tensor,
                        repeats: int = 5) -> Dict[str, float]:
    """Milliseconds of every DEGC step over the blocks of one forward, and ``other``,
    without a profiler.

    Each step is re-run on its own, block by block, on the inputs the blocks got in one
    forward of ``x``, round-robin with that whole forward (the same load for all);
    ``other`` is the forward's median minus the steps' medians. A step timed alone
    finds its inputs in cache, so the steps' shares are a lower bound where the
    forward's activations do not fit in cache.
    """
    states = _block_states(runner, _degc_calls(runner, model, x))
    jobs = {name: _step_job(runner, step, states) for name, step in _STEPS.items()}
    jobs['forward'] = partial(runner.forward, model, x)
    times = round_robin(runner, jobs, warmup=1, repeats=repeats)
    median = {name: 1e3 * float(np.median(t)) for name, t in times.items()}
    out = {s: median[s] for s in DEGC_STEPS}
    out[OTHER] = median['forward'] - sum(out.values())
    return out


def profile_degc(runner: Runner, model: nn.Module, x: Tensor, repeats: int = 5,
                 op_top: int = 0, name: str = 'model',
                 gemm_macs_per_s: Optional[float] = None) -> dict:
    """Time split of ``repeats`` forwards of a ClusterViG on ``x`` :math:`(B, 3, H, W)`.

    Args:
        runner (Runner): device and precision.
        model (ClusterViG): in eval mode, not compiled (the profiler needs the ranges).
        x (Tensor): the input.
        repeats (int): forwards, unprofiled and profiled each.
        op_top (int): operators per step in ``operators`` (0: no table).
        name (str): the row's ``model``.
        gemm_macs_per_s (float, optional): the device's matrix-product rate
            (:func:`gemm_rate`), for the k-NN's least time.

    Returns:
        dict: ``total_ms`` (median unprofiled), ``profiled_ms``, ``steps_ms`` and
        ``share`` per step and ``other`` (medians; shares of their sum, adding up to 1),
        ``isolated_ms`` and ``isolated_share`` (:func:`isolated_step_times`, shares of
        the unprofiled forward), ``tokens``, ``kappa``, ``kmeans_iterations`` per block
        and their mean, ``operators`` (or None), ``knn_gmacs`` (:func:`knn_macs`) and,
        given ``gemm_macs_per_s``, ``knn_floor_ms`` (those multiply-adds at that rate)
        and ``knn_floor_share`` (of the unprofiled forward; else both None).
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
    isolated = isolated_step_times(runner, model, x, repeats)
    isolated_total = sum(isolated.values())
    iters = kmeans_iterations(intermediates)
    counted = [i for i in iters if i is not None]
    first = intermediates[0].partition
    batch, _, height, width = x.shape
    macs = knn_macs(intermediates)
    floor_ms = None if gemm_macs_per_s is None else 1e3 * macs / gemm_macs_per_s
    total_ms = 1e3 * float(np.median(plain))
    return dict(model=name, height=height, width=width, batch=batch,
                tokens=first.labels.shape[1], kappa=first.counts.shape[1],
                total_ms=total_ms, profiled_ms=median['total'],
                steps_ms={s: median[s] for s in (*DEGC_STEPS, OTHER)},
                share={s: median[s] / steps_sum for s in (*DEGC_STEPS, OTHER)},
                isolated_ms=isolated,
                isolated_share={s: v / isolated_total for s, v in isolated.items()},
                kmeans_iterations=iters,
                kmeans_iterations_mean=float(np.mean(counted)) if counted else None,
                repeats=repeats, knn_gmacs=macs / 1e9, knn_floor_ms=floor_ms,
                knn_floor_share=None if floor_ms is None else floor_ms / total_ms,
                operators=operator_table(events, op_top, on_gpu) if op_top else None)


def measure_profile(runner: Runner, candidates: Sequence[Candidate],
                    inputs: Sequence[Tuple[int, int, int]], img_size: int = 224,
                    warmup: int = 2, repeats: int = 5, op_top: int = 0) -> List[dict]:
    """:func:`profile_degc` of every ClusterViG candidate (others are skipped) at every
    ``(height, width, batch)``; models built for ``img_size`` (pos_embed resized to
    other inputs), eager. The device's :func:`gemm_rate` is measured once, first."""
    ours = [c for c in candidates if c.family == 'cvig']
    rate = gemm_rate(runner) if ours else None
    rows = []
    for c in ours:
        model = runner.model(c.make, img_size, eager=True)
        for height, width, batch in inputs:
            x = runner.inputs(batch, height, width)
            warm_up({c.name: partial(runner.forward, model, x)}, warmup)
            rows.append(profile_degc(runner, model, x, repeats, op_top, c.name, rate))
    return rows
