"""Throughput against the ViG peers and resolution scaling, in one process.

* :func:`measure_throughput` (paper Table VI): images/s and latency of every model at
  every batch size, models round-robin; our models' speedups over each peer of their
  size as the ratio of medians and as paired per-round ratios.
* :func:`measure_scaling`: time per image against the token count, every size of
  every model in the same rounds, so the ratios between sizes share the noise too.
  Every model is built for the size it is timed at (positional embedding of that grid),
  as a model fine-tuned at that resolution would be.
"""
import math
from functools import partial
from typing import List, Optional, Sequence

from torch import nn

from ..models import ClusterViG
from ..models.degc import DEGC
from .models import PEERS, Candidate
from .timing import Runner, paired_ratio, round_robin, summarize


def measure_throughput(runner: Runner, candidates: Sequence[Candidate],
                       batch_sizes: Sequence[int], img_size: int = 224, warmup: int = 2,
                       repeats: int = 5) -> List[dict]:
    """One row per model and batch size: ``images_per_s``, ``latency_ms``, the
    :func:`~.timing.summarize` statistics, ``times_s`` and, for our models,
    ``speedup_vs_<peer family>`` (ratio of medians) and ``..._paired``."""
    models = {c.name: runner.model(c.make, img_size) for c in candidates}
    rows = []
    for batch in batch_sizes:
        x = runner.inputs(batch, img_size, img_size)
        jobs = {name: partial(runner.forward, model, x) for name, model in models.items()}
        times = round_robin(runner, jobs, warmup, repeats)
        for c in candidates:
            stats = summarize(times[c.name])
            rows.append(dict(model=c.name, family=c.family, size=c.size, batch=batch,
                             img_size=img_size, images_per_s=batch / stats['median_s'],
                             latency_ms=1e3 * stats['median_s'], **stats,
                             times_s=times[c.name], **speedups(c, candidates, times)))
    return rows


def speedups(candidate: Candidate, candidates: Sequence[Candidate], times: dict) -> dict:
    """Speedup of one of our models over each peer of its size (empty for peers)."""
    if candidate.family in PEERS:
        return {}
    out = {}
    for peer in candidates:
        if peer.family in PEERS and peer.size == candidate.size:
            ratio = paired_ratio(times[peer.name], times[candidate.name])
            out[f'speedup_vs_{peer.family}'] = ratio['ratio_of_medians']
            out[f'speedup_vs_{peer.family}_paired'] = ratio
    return out


def measure_scaling(runner: Runner, candidates: Sequence[Candidate], sizes: Sequence[int],
                    batch: int = 1, warmup: int = 2, repeats: int = 5) -> List[dict]:
    """One row per model and (square) input size: ``ms_per_image``, ``tokens``,
    ``kappa`` (None for models without DEGC), statistics, and ``time_ratio`` /
    ``token_ratio`` over the smallest size of the same model."""
    jobs, keys, models = {}, {}, {}
    for size in sizes:
        x = runner.inputs(batch, size, size)
        for c in candidates:
            name = f'{c.name} @ {size}px'
            models[name] = runner.model(c.make, size)
            jobs[name] = partial(runner.forward, models[name], x)
            keys[name] = (c, size)
    times = round_robin(runner, jobs, warmup, repeats)
    rows = []
    for name, (c, size) in keys.items():
        stats = summarize(times[name])
        rows.append(dict(model=c.name, family=c.family, img_size=size,
                         tokens=tokens_at(models[name], size, size),
                         kappa=kappa_at(models[name], size, size), batch=batch,
                         ms_per_image=1e3 * stats['median_s'] / batch, **stats,
                         times_s=times[name]))
    add_scaling_ratios(rows)
    return rows


def _unwrapped(model: nn.Module) -> nn.Module:
    return getattr(model, '_orig_mod', model)  # torch.compile keeps the module there


def tokens_at(model: nn.Module, height: int, width: int) -> int:
    """Tokens per image of an isotropic model (ClusterViG, or Vig with stride 16)."""
    model = _unwrapped(model)
    stride = model.arch['stride'] if isinstance(model, ClusterViG) else 16
    return math.ceil(height / stride) * math.ceil(width / stride)


def kappa_at(model: nn.Module, height: int, width: int) -> Optional[int]:
    """Clusters per image at that input size (None for models without DEGC)."""
    degc = next((m for m in _unwrapped(model).modules() if isinstance(m, DEGC)), None)
    return None if degc is None else degc.clusters_for(tokens_at(model, height, width))


def add_scaling_ratios(rows: List[dict]):
    """Time per image of every size over that of the smallest size, per model."""
    base = {}
    for r in sorted(rows, key=lambda r: r['img_size']):
        base.setdefault(r['model'], r)
        r['base_size'] = base[r['model']]['img_size']
        r['time_ratio'] = r['ms_per_image'] / base[r['model']]['ms_per_image']
        r['token_ratio'] = r['tokens'] / base[r['model']]['tokens']
