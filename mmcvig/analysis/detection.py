"""Backbone cost at detection scale: inference and training, time and peak memory.

Mask R-CNN trains at 1333x800 (padded to 1344 by ``pad_size_divisor=32``) with 2 images
per GPU, and tests one image at a time. These tables time the backbones alone, as the
detection configs build them, all in one process and round-robin (see
:mod:`.timing`), so their ratios share the machine's load:

* :func:`measure_detection` with ``train=False``: batch 1, eval mode, inference mode;
* with ``train=True``: forward + backward of a batch in train mode (the loss sums the
  means of all output levels, standing in for the neck and heads).

Peak memory is measured per model within the same process, see :func:`peak_memory`.
"""
from functools import partial
from typing import Dict, List, Sequence

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile

from .models import Candidate
from .timing import Job, Runner, paired_ratio, round_robin, summarize

TRAIN_SHAPE = (2, 800, 1344)  # batch, height, width
INFERENCE_SHAPE = (1, 800, 1344)
# ClusterViG's pos_embed is made for its 224 pretraining and resized to every input.
PRETRAIN_SIZE = 224
REFERENCE = 'CViG-S'
# Allocator events the profiler reports for host memory.
_HOST_DEVICES = ('CPU', 'MKLDNN', 'IDEEP')


def _bytes_of(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def state_bytes(model: nn.Module) -> int:
    """Bytes of the parameters and buffers (what stays allocated between steps)."""
    return _bytes_of(model.parameters()) + _bytes_of(model.buffers())


def allocation_peak(memory_events) -> int:
    """Highest running sum of allocations (positive ``nbytes()``) and frees (negative)
    of host memory, in the order they happened: the peak above what was live at the
    start. ``memory_events``: the profiler's raw allocator records."""
    records = sorted((e for e in memory_events
                      if e.name() == '[memory]' and e.device_type().name in _HOST_DEVICES),
                     key=lambda e: e.start_ns())
    live = peak = 0
    for record in records:
        live += record.nbytes()
        peak = max(peak, live)
    return peak


def peak_memory(runner: Runner, job: Job) -> int:
    """Peak bytes allocated by one call of ``job`` above what was allocated before it.

    Method, so that every model can be measured in one process:

    * CUDA: ``torch.cuda.reset_peak_memory_stats``, then ``max_memory_allocated`` after
      the call minus ``memory_allocated`` before it (the caching allocator's exact
      tensor accounting; cached but free blocks do not count).
    * CPU: one call under ``torch.profiler.profile(profile_memory=True)``, which
      records every allocation and free of torch's CPU allocator (size and time); the
      peak of their running sum, :func:`allocation_peak`. It counts the tensors the call
      creates (activations, saved tensors, gradients, workspaces that go through torch's
      allocator), not memory a library allocates on its own nor allocator/OS overhead,
      so it is lower than the process's peak RSS.

    Add :func:`state_bytes` and the input for the total the call needs.
    """
    if runner.device.type == 'cuda':
        runner.sync()
        before = torch.cuda.memory_allocated(runner.device)
        torch.cuda.reset_peak_memory_stats(runner.device)
        job()
        runner.sync()
        return torch.cuda.max_memory_allocated(runner.device) - before
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        job()
    return allocation_peak(prof.profiler.kineto_results.events())


def measure_detection(runner: Runner, candidates: Sequence[Candidate], batch: int,
                      height: int, width: int, train: bool, warmup: int = 1,
                      repeats: int = 3, reference: str = REFERENCE) -> List[dict]:
    """Time (round-robin) and peak memory of every backbone on a
    :math:`(B, 3, H, W)` batch.

    Args:
        runner (Runner): device and precision.
        candidates (Sequence[Candidate]): the backbones (see
            :func:`~.models.detection_candidates`).
        batch, height, width (int): the input.
        train (bool): forward + backward in train mode (see :meth:`Runner.train_step`),
            else an eval-mode inference forward.
        warmup, repeats (int): untimed and timed rounds.
        reference (str): the model the ``relative`` columns divide by (the first one if
            it is not among the candidates).

    Returns:
        list[dict]: per model, the :func:`~.timing.summarize` statistics, ``times_s``,
        ``relative`` (median over the reference's), ``paired`` (per-round ratios),
        ``peak_mb`` (state + input + :func:`peak_memory`), ``step_peak_mb``,
        ``state_mb`` and ``memory_relative``.
    """
    x = runner.inputs(batch, height, width)
    step = runner.train_step if train else runner.forward
    models = {c.name: runner.model(c.make, PRETRAIN_SIZE, train=train) for c in candidates}
    jobs: Dict[str, Job] = {name: partial(step, model, x) for name, model in models.items()}
    times = round_robin(runner, jobs, warmup, repeats)
    ref = reference if reference in jobs else next(iter(jobs))
    rows = []
    for c in candidates:
        step_peak = peak_memory(runner, jobs[c.name])
        state = state_bytes(models[c.name])
        rows.append(dict(model=c.name, family=c.family, mode='train' if train else 'inference',
                         batch=batch, height=height, width=width, **summarize(times[c.name]),
                         times_s=times[c.name], reference=ref,
                         paired=paired_ratio(times[c.name], times[ref]),
                         peak_mb=(state + _bytes_of([x]) + step_peak) / 2**20,
                         step_peak_mb=step_peak / 2**20, state_mb=state / 2**20))
    by_name = {r['model']: r for r in rows}
    for r in rows:
        r['relative'] = r['median_s'] / by_name[ref]['median_s']
        r['memory_relative'] = r['peak_mb'] / by_name[ref]['peak_mb']
    return rows


def measure_detection_tables(runner: Runner, candidates: Sequence[Candidate],
                             modes: Sequence[str] = ('inference', 'train'),
                             height: int = TRAIN_SHAPE[1], width: int = TRAIN_SHAPE[2],
                             train_batch: int = TRAIN_SHAPE[0], warmup: int = 1,
                             repeats: int = 3,
                             reference: str = REFERENCE) -> Dict[str, List[dict]]:
    """The inference table (batch 1, :data:`INFERENCE_SHAPE`) and the training
    table (``train_batch``), each asked for in ``modes``."""
    unknown = set(modes) - {'inference', 'train'}
    if unknown:
        raise ValueError(f'Unknown detection modes {sorted(unknown)}')
    out = {}
    for mode in modes:
        batch = train_batch if mode == 'train' else INFERENCE_SHAPE[0]
        out[mode] = measure_detection(runner, candidates, batch, height, width,
                                      mode == 'train', warmup, repeats, reference)
    return out
