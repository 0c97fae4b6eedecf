"""Throughput, latency, resolution scaling and DEGC profile of ClusterViG backbones.

Three measurements, any combination in one run (one process, so every ratio in the
output shares the machine's noise):

* **throughput** (``--batch-sizes``, paper Table VI): images/s and latency of each
  backbone against mmpretrain's ``Vig`` and ``PyramidVig`` of the same size. For every
  batch size all models run round-robin, one forward each per round, so a burst of load
  from other processes hits every model alike; speedups are reported as the ratio of the
  medians and as the median (and IQR) of the per-round paired ratios.
* **scaling** (``--sizes``): time per image against the token count for ClusterViG with
  its fixed kappa, ClusterViG with ``cluster_size`` (kappa follows the tokens) and Vig
  (k-NN over all tokens). Every model is built for the size it is timed at (positional
  embedding of that grid), as a model fine-tuned at that resolution would be.
* **profile** (``--profile``): share of the forward time spent in the four DEGC steps
  (partition, build_graph, global_update, local_update) and in everything else (stem,
  CPE, FC1/FC2, FFN: the dense convolutions). Method: the step functions and modules of
  every DEGC are wrapped, for the duration of the measurement only, by wall-clock timers
  (``mmcvig.models.degc.degc.partition`` / ``build_graph`` / ``build_graph_sparse`` /
  ``cluster_means`` patched in that module's namespace; ``forward`` of every
  ``global_update`` and ``local_update`` patched on the instance). The model code is not
  touched. ``--op-table N`` adds one forward under ``torch.profiler`` and lists the N
  costliest operators (self CPU time) of every step.

Writes ``benchmark.json`` and, per measurement, a CSV (and PNG plots) to ``--out-dir``.

Examples:
  # Table VI style, tiny and small against Vig/PViG, 2 threads
  python tools/analysis_tools/benchmark.py --arch tiny small --batch-sizes 1 8 32 --threads 2
  # resolution scaling and profile only
  python tools/analysis_tools/benchmark.py --arch tiny --batch-sizes --sizes 224 448 896 \\
      --profile 224 224,32 800x1333
  # the backbone of a config (peers matched by its arch)
  python tools/analysis_tools/benchmark.py configs/cvig-ti_8xb128_in1k.py
"""
import argparse
import contextlib
import csv
import importlib
import json
import math
import os
import os.path as osp
import platform
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

# Run from a checkout without installing or setting PYTHONPATH.
sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from mmengine.config import Config, DictAction  # noqa: E402
from torch import nn  # noqa: E402

import mmcvig  # noqa: E402,F401  (registers ClusterViG)
from mmcvig.models import ClusterViG  # noqa: E402
# The step modules themselves: the package re-exports functions of the same names.
degc_module = importlib.import_module('mmcvig.models.degc.degc')
partition_module = importlib.import_module('mmcvig.models.degc.partition')

# Paper naming of the sizes; the peers use the same suffix.
SIZE_SUFFIX = {'tiny': 'Ti', 'small': 'S', 'base': 'B', 'base-hr': 'B-HR'}
# mmpretrain arch of the peers matching each ClusterViG arch (base-hr has no own peer).
PEER_ARCH = {'tiny': 'tiny', 'small': 'small', 'base': 'base', 'base-hr': 'base'}
PEERS = ('vig', 'pvig')
DEGC_STEPS = ('partition', 'build_graph', 'global_update', 'local_update')
OTHER = 'other'  # stem, CPE, FC1/FC2, FFN, pos_embed: the dense convolutions


# ----------------------------------------------------------------------------- models
@dataclass
class Candidate:
    """A model to time: ``make(img_size)`` returns it in eval mode, on the CPU."""
    name: str
    family: str  # 'cvig' (ours, profiled), 'vig', 'pvig' or 'backbone' (from a config)
    size: Optional[str]  # mmpretrain-style size of the peers it is compared with
    make: Callable[[int], nn.Module]
    info: dict = field(default_factory=dict)


def _eval(model: nn.Module) -> nn.Module:
    # mmpretrain's Vig/PyramidVig.train() return None, so `.eval()` cannot be chained.
    model.eval()
    return model


def _resize_pos_embed(model: nn.Module, img_size: int, stride: int) -> nn.Module:
    """Give a Vig/PyramidVig the positional embedding of an ``img_size`` grid.

    mmpretrain builds them for 224 only (``x = stem(x) + pos_embed`` fails at any other
    size). They are randomly initialised here, so a zero embedding of the right shape is
    the model built for that resolution.
    """
    grid = math.ceil(img_size / stride)
    if model.pos_embed.shape[-1] != grid:
        channels = model.pos_embed.shape[1]
        model.pos_embed = nn.Parameter(torch.zeros(1, channels, grid, grid))
    return model


def peer_candidates(size: str) -> List[Candidate]:
    """mmpretrain's Vig (isotropic, k-NN over all tokens) and PyramidVig of ``size``."""
    from mmpretrain.models import PyramidVig, Vig
    suffix = SIZE_SUFFIX[size]
    return [
        Candidate(f'Vig-{suffix}', 'vig', size,
                  lambda s: _eval(_resize_pos_embed(Vig(size), s, stride=16))),
        Candidate(f'PViG-{suffix}', 'pvig', size,
                  lambda s: _eval(_resize_pos_embed(PyramidVig(size), s, stride=4))),
    ]


def cvig_candidate(arch, options: dict, name: str = None) -> Candidate:
    """ClusterViG of ``arch`` (a name or a dict) with extra constructor ``options``."""
    if isinstance(arch, str):
        name = name or f'CViG-{SIZE_SUFFIX[arch]}'
        size = PEER_ARCH[arch]
    else:
        name, size = name or 'CViG-custom', None
    return Candidate(name, 'cvig', size,
                     lambda s: _eval(ClusterViG(arch, img_size=s, **options)),
                     info=dict(arch=arch, **options))


def config_candidate(path: str, options: dict) -> Candidate:
    """The backbone of a config (``model.backbone``, or ``model`` if it is a backbone)."""
    from mmengine.registry import init_default_scope
    cfg = Config.fromfile(path)
    scope = cfg.get('default_scope', 'mmpretrain')
    init_default_scope(scope)
    registry = __import__(f'{scope}.registry', fromlist=['MODELS']).MODELS
    backbone_cfg = cfg.model.get('backbone', cfg.model)
    backbone_cfg.update(options)
    arch = backbone_cfg.get('arch')
    arch = arch if isinstance(arch, str) else None  # a custom (dict) arch has no peers
    stem = osp.splitext(osp.basename(path))[0]
    if backbone_cfg.get('type') == 'ClusterViG':
        family, size = 'cvig', PEER_ARCH.get(arch)
    else:
        family, size = 'backbone', arch if arch in ('tiny', 'small', 'base') else None

    def build(img_size):
        built_cfg = dict(backbone_cfg)
        if family == 'cvig':
            built_cfg['img_size'] = img_size
        return _eval(registry.build(built_cfg))

    return Candidate(f'{backbone_cfg.get("type")}({stem})', family, size, build,
                     info=dict(config=path, backbone=backbone_cfg.to_dict()))


def main_candidates(args) -> List[Candidate]:
    """The models under test, from the config, ``--arch-dict`` or ``--arch``."""
    options = dict(args.backbone_options or {})
    if args.config:
        return [config_candidate(args.config, options)]
    if args.arch_dict:
        return [cvig_candidate(json.loads(args.arch_dict), options)]
    return [cvig_candidate(arch, options) for arch in args.arch]


def with_peers(candidates: List[Candidate], peers: Sequence[str],
               peer_size: Optional[str]) -> List[Candidate]:
    """``candidates`` followed by the requested peers of every size they cover."""
    sizes = [peer_size] if peer_size else [c.size for c in candidates if c.size]
    out = list(candidates)
    for size in dict.fromkeys(sizes):  # ordered, unique
        out += [p for p in peer_candidates(size) if p.family in peers]
    if peers and not sizes:
        print('No peer size known for these models (custom arch or config without arch): '
              'peers skipped; pass --peer-size tiny|small|base to add them.')
    return out


# ----------------------------------------------------------------------------- timing
Job = Tuple[nn.Module, torch.Tensor]  # a model and the input it is timed on


class Runner:
    """Device, precision and compile settings shared by every forward."""

    def __init__(self, device: str, amp: bool, compile_model: bool, seed: int = 0):
        self.device = torch.device(device)
        self.amp = amp
        self.compile = compile_model
        self.seed = seed

    def model(self, candidate: Candidate, img_size: int, eager: bool = False) -> nn.Module:
        """The candidate on the device (compiled with ``--compile`` unless ``eager``),
        with the same random weights whatever is built before it: ClusterViG's k-means
        iterations, hence its time, depend on the weights."""
        torch.manual_seed(self.seed)
        model = candidate.make(img_size).to(self.device)
        return torch.compile(model) if self.compile and not eager else model

    def inputs(self, batch: int, height: int, width: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(self.seed)
        return torch.randn(batch, 3, height, width, generator=gen).to(self.device)

    def sync(self):
        # CUDA kernels run asynchronously: without it a timer sees only the launches.
        if self.device.type == 'cuda':
            torch.cuda.synchronize(self.device)

    def autocast(self):
        if not self.amp:
            return contextlib.nullcontext()
        # bf16 is the CPU's fast half type (AMX/AVX512-BF16); fp16 is the GPU's.
        dtype = torch.float16 if self.device.type == 'cuda' else torch.bfloat16
        return torch.autocast(self.device.type, dtype=dtype)

    def forward(self, model: nn.Module, x: torch.Tensor):
        with torch.inference_mode(), self.autocast():
            return model(x)

    def timed(self, model: nn.Module, x: torch.Tensor) -> float:
        """Seconds of one forward."""
        self.sync()
        start = time.perf_counter()
        self.forward(model, x)
        self.sync()
        return time.perf_counter() - start


def warm_up(runner: Runner, jobs: Dict[str, Job], rounds: int):
    """First calls pay for allocator growth and oneDNN primitive creation (and, with
    ``--compile``, compilation) for every new shape: run each job ``rounds`` times."""
    for _ in range(max(rounds, 1)):
        for name, (model, x) in jobs.items():
            try:
                runner.forward(model, x)
            except RuntimeError as err:
                raise RuntimeError(f'{name} failed on input {tuple(x.shape)}: {err}') from err


def interleaved_times(runner: Runner, jobs: Dict[str, Job], warmup: int,
                      repeats: int) -> Dict[str, List[float]]:
    """``repeats`` rounds, each timing every job (a model and its input) once, so a
    burst of load from other processes hits all of them alike. The starting job rotates
    so no job always runs right after the same other one."""
    warm_up(runner, jobs, warmup)
    names = list(jobs)
    times = {name: [] for name in names}
    for r in range(repeats):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            times[name].append(runner.timed(*jobs[name]))
    return times


def summarize(times: Sequence[float]) -> dict:
    """Median, quartiles and range of a list of seconds."""
    arr = np.asarray(times)
    q1, median, q3 = np.percentile(arr, [25, 50, 75])
    return dict(median_s=float(median), q1_s=float(q1), q3_s=float(q3),
                min_s=float(arr.min()), max_s=float(arr.max()), repeats=len(arr))


def paired_ratio(slow: Sequence[float], fast: Sequence[float]) -> dict:
    """Speedup of ``fast`` over ``slow`` as the ratio of medians and the median/IQR of
    the per-round ratios (both ran in the same round, under the same load)."""
    per_round = np.asarray(slow) / np.asarray(fast)
    q1, median, q3 = np.percentile(per_round, [25, 50, 75])
    return dict(ratio_of_medians=float(np.median(slow) / np.median(fast)),
                paired_median=float(median), paired_q1=float(q1), paired_q3=float(q3))


def parse_profile(text: str) -> Tuple[int, int, int]:
    """'224' -> (224, 224, batch 1); '800x1333' -> (800, 1333, 1); '224,32' -> (224,
    224, 32)."""
    size, _, batch = text.lower().partition(',')
    parts = size.split('x') + [batch or '1']
    if len(parts) not in (2, 3) or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(
            f'profile entry must be N, HxW, N,BATCH or HxW,BATCH (positive), got {text!r}')
    return int(parts[0]), int(parts[-2]), int(parts[-1])


# ------------------------------------------------------------------------- throughput
def measure_throughput(runner: Runner, candidates: List[Candidate], args) -> List[dict]:
    models = {c.name: runner.model(c, args.img_size) for c in candidates}
    rows = []
    for batch in args.batch_sizes:
        x = runner.inputs(batch, args.img_size, args.img_size)
        jobs = {name: (model, x) for name, model in models.items()}
        times = interleaved_times(runner, jobs, args.warmup, args.repeats)
        for c in candidates:
            stats = summarize(times[c.name])
            rows.append(dict(model=c.name, family=c.family, size=c.size, batch=batch,
                             img_size=args.img_size,
                             images_per_s=batch / stats['median_s'],
                             latency_ms=1e3 * stats['median_s'], **stats,
                             times_s=times[c.name], **speedups(c, candidates, times)))
        print_throughput([r for r in rows if r['batch'] == batch])
    return rows


def speedups(candidate: Candidate, candidates: List[Candidate], times: dict) -> dict:
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


def print_throughput(rows: List[dict]):
    for r in rows:
        spread = f'{r["batch"] / r["q3_s"]:.2f}-{r["batch"] / r["q1_s"]:.2f}'
        extra = ''.join(f'  x{r[k]:.2f} vs {k[len("speedup_vs_"):]}'
                        for k in ('speedup_vs_pvig', 'speedup_vs_vig') if k in r)
        print(f'b={r["batch"]:<4d} {r["model"]:<18s} {r["images_per_s"]:8.2f} img/s '
              f'(IQR {spread})  latency {r["latency_ms"]:9.1f} ms{extra}')


# ---------------------------------------------------------------------------- scaling
def scaling_candidates(candidates: List[Candidate], cluster_size: Optional[int],
                       peers: Sequence[str], peer_size: Optional[str]) -> List[Candidate]:
    """Every ClusterViG as given and, with ``cluster_size``, with kappa following the
    tokens; plus Vig (the k-NN over all tokens) of each size."""
    out = []
    for c in candidates:
        out.append(c)
        if c.family == 'cvig' and cluster_size and 'arch' in c.info:
            options = {k: v for k, v in c.info.items() if k != 'arch'}
            options['cluster_size'] = cluster_size
            out.append(cvig_candidate(c.info['arch'], options,
                                      name=f'{c.name} cs{cluster_size}'))
    vig_only = [p for p in ('vig', ) if p in peers]
    return with_peers(out, vig_only, peer_size) if vig_only else out


def measure_scaling(runner: Runner, candidates: List[Candidate], args) -> List[dict]:
    """Every size of every model in the same rounds: the ratios between sizes, not only
    between models, then share the machine's noise."""
    jobs, keys = {}, {}
    for size in args.sizes:
        x = runner.inputs(args.scaling_batch, size, size)
        for c in candidates:
            name = f'{c.name} @ {size}px'
            jobs[name] = (runner.model(c, size), x)
            keys[name] = (c, size)
    times = interleaved_times(runner, jobs, args.warmup, args.repeats)
    rows = []
    for name, (c, size) in keys.items():
        stats = summarize(times[name])
        model = jobs[name][0]
        rows.append(dict(model=c.name, family=c.family, img_size=size,
                         tokens=tokens_at(model, size, size), kappa=kappa_at(model, size, size),
                         batch=args.scaling_batch,
                         ms_per_image=1e3 * stats['median_s'] / args.scaling_batch,
                         **stats, times_s=times[name]))
    add_scaling_ratios(rows)
    for r in rows:
        print(f'{r["img_size"]:5d}px {r["tokens"]:6d} tokens  {r["model"]:<18s} '
              f'kappa {str(r["kappa"]):>4s}  {r["ms_per_image"]:9.1f} ms/image  '
              f'x{r["time_ratio"]:.2f} vs {r["base_size"]}px')
    return rows


def tokens_at(model: nn.Module, height: int, width: int) -> int:
    """Tokens per image of an isotropic model (ClusterViG, or Vig with stride 16)."""
    model = getattr(model, '_orig_mod', model)  # unwrap torch.compile
    stride = model.arch['stride'] if isinstance(model, ClusterViG) else 16
    return math.ceil(height / stride) * math.ceil(width / stride)


def kappa_at(model: nn.Module, height: int, width: int) -> Optional[int]:
    """Clusters per image at that input size (None for models without DEGC)."""
    model = getattr(model, '_orig_mod', model)
    degcs = [m for m in model.modules() if isinstance(m, degc_module.DEGC)]
    return degcs[0].clusters_for(tokens_at(model, height, width)) if degcs else None


def add_scaling_ratios(rows: List[dict]):
    """Time per image of every size over that of the smallest size, per model."""
    base = {}
    for r in sorted(rows, key=lambda r: r['img_size']):
        base.setdefault(r['model'], r)
        r['base_size'] = base[r['model']]['img_size']
        r['time_ratio'] = r['ms_per_image'] / base[r['model']]['ms_per_image']
        r['token_ratio'] = r['tokens'] / base[r['model']]['tokens']


# ---------------------------------------------------------------------------- profile
class StepTimer:
    """Wall-clock time of the DEGC steps, by wrapping them (see the module docstring).

    Each wrapped call is also a ``torch.profiler.record_function`` range named
    ``degc.<step>``, so an operator table can attribute operators to steps.
    """

    def __init__(self, runner: Runner):
        self.runner = runner
        self.seconds = dict.fromkeys(DEGC_STEPS, 0.0)
        self.assign_calls = 0
        self.partition_calls = 0

    def wrap(self, step: str, fn: Callable) -> Callable:
        def timed(*args, **kwargs):
            self.runner.sync()
            start = time.perf_counter()
            with torch.profiler.record_function(f'degc.{step}'):
                out = fn(*args, **kwargs)
            self.runner.sync()
            self.seconds[step] += time.perf_counter() - start
            return out

        return timed

    def count_assign(self, fn: Callable) -> Callable:
        def counted(*args, **kwargs):
            self.assign_calls += 1
            return fn(*args, **kwargs)

        return counted

    def reset(self):
        self.seconds = dict.fromkeys(DEGC_STEPS, 0.0)
        self.assign_calls = self.partition_calls = 0

    @contextlib.contextmanager
    def installed(self, model: nn.Module):
        """Patch the step functions and the modules of every DEGC of ``model``."""
        patches = [
            (degc_module, 'partition', self._partition(degc_module.partition)),
            (degc_module, 'build_graph', self.wrap('build_graph', degc_module.build_graph)),
            (degc_module, 'build_graph_sparse',
             self.wrap('build_graph', degc_module.build_graph_sparse)),
            # z_i = mean of the cluster (Eq. 2) is the first half of the global update.
            (degc_module, 'cluster_means',
             self.wrap('global_update', degc_module.cluster_means)),
            (partition_module, '_assign', self.count_assign(partition_module._assign)),
        ]
        for m in model.modules():
            if isinstance(m, degc_module.DEGC):
                patches.append((m.global_update, 'forward',
                                self.wrap('global_update', m.global_update.forward)))
                for method in ('forward', 'forward_sparse'):
                    patches.append((m.local_update, method,
                                    self.wrap('local_update', getattr(m.local_update, method))))
        with contextlib.ExitStack() as stack:
            for owner, name, replacement in patches:
                stack.enter_context(_patched(owner, name, replacement))
            yield self

    def _partition(self, fn: Callable) -> Callable:
        timed = self.wrap('partition', fn)

        def counted(*args, **kwargs):
            self.partition_calls += 1
            return timed(*args, **kwargs)

        return counted


@contextlib.contextmanager
def _patched(owner, name: str, replacement):
    """Set ``owner.name`` for the duration of the block. For a module instance the
    attribute is set on the instance and deleted afterwards, unmasking the class's."""
    on_instance = isinstance(owner, nn.Module)
    original = getattr(owner, name)
    setattr(owner, name, replacement)
    try:
        yield
    finally:
        if on_instance:
            delattr(owner, name)
        else:
            setattr(owner, name, original)


def measure_profile(runner: Runner, candidates: List[Candidate], args) -> List[dict]:
    """Per model and size: median seconds of every step over ``repeats`` forwards."""
    rows = []
    for c in (c for c in candidates if c.family == 'cvig'):
        model = runner.model(c, args.img_size, eager=True)  # timers need Python calls
        for height, width, batch in args.profile:
            x = runner.inputs(batch, height, width)
            warm_up(runner, {c.name: (model, x)}, args.warmup)
            rows.append(profile_one(runner, c.name, model, x, args))
    print_profile(rows)
    return rows


def profile_one(runner: Runner, name: str, model: nn.Module, x: torch.Tensor, args) -> dict:
    timer = StepTimer(runner)
    per_step = {step: [] for step in (*DEGC_STEPS, OTHER, 'total')}
    iters = []
    with timer.installed(model):
        for _ in range(args.repeats):
            timer.reset()
            total = runner.timed(model, x)
            for step in DEGC_STEPS:
                per_step[step].append(timer.seconds[step])
            per_step[OTHER].append(total - sum(timer.seconds.values()))
            per_step['total'].append(total)
            # One assignment after the initialisation plus one per Lloyd iteration.
            iters.append((timer.assign_calls - timer.partition_calls) /
                         max(timer.partition_calls, 1))
        ops = operator_table(runner, model, x, args.op_table) if args.op_table else None
    median = {step: float(np.median(v)) for step, v in per_step.items()}
    steps_sum = sum(median[s] for s in (*DEGC_STEPS, OTHER))
    height, width = x.shape[2:]
    return dict(model=name, height=height, width=width, batch=x.shape[0],
                tokens=tokens_at(model, height, width), kappa=kappa_at(model, height, width),
                total_ms=1e3 * median['total'],
                steps_ms={s: 1e3 * median[s] for s in (*DEGC_STEPS, OTHER)},
                # shares of the sum of the step medians, so they add up to 1
                share={s: median[s] / steps_sum for s in (*DEGC_STEPS, OTHER)},
                kmeans_iterations_mean=float(np.mean(iters)), repeats=args.repeats,
                operators=ops)


def operator_table(runner: Runner, model: nn.Module, x: torch.Tensor, top: int,
                   forwards: int = 3) -> dict:
    """Self time (ms per forward, mean of ``forwards``) of the ``top`` costliest
    operators of every step, under ``torch.profiler``: CPU time on the CPU, the time of
    the kernels an operator launched on a GPU. The profiler adds overhead per operator,
    so these rank operators; the step timers give the split."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile
    on_gpu = runner.device.type == 'cuda'
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_gpu else [])
    with profile(activities=activities) as prof:
        for _ in range(forwards):
            runner.forward(model, x)
        runner.sync()
    totals: Dict[str, Dict[str, float]] = {}
    for event in prof.events():
        # Operators are CPU-side events; a GPU kernel's time is in its operator's
        # self_device_time_total.
        if event.name.startswith('degc.') or event.device_type != DeviceType.CPU:
            continue
        us = event.self_device_time_total if on_gpu else event.self_cpu_time_total
        by_op = totals.setdefault(_enclosing_step(event), {})
        by_op[event.name] = by_op.get(event.name, 0.0) + us / 1e3 / forwards
    return {step: dict(sorted(ops.items(), key=lambda kv: -kv[1])[:top])
            for step, ops in totals.items()}


def _enclosing_step(event) -> str:
    parent = event.cpu_parent
    while parent is not None:
        if parent.name.startswith('degc.'):
            return parent.name[len('degc.'):]
        parent = parent.cpu_parent
    return OTHER


def print_profile(rows: List[dict]):
    header = ''.join(f'{s:>17s}' for s in (*DEGC_STEPS, OTHER))
    print(f'{"model":<12s}{"batch":>6s}{"input":>10s}{"tokens":>7s}{"kappa":>6s}'
          f'{"km it":>6s}{"ms":>9s}{header}')
    for r in rows:
        cells = ''.join(f'{r["steps_ms"][s]:9.1f} ({100 * r["share"][s]:4.1f}%)'
                        for s in (*DEGC_STEPS, OTHER))
        print(f'{r["model"]:<12s}{r["batch"]:>6d}{r["height"]:>5d}x{r["width"]:<4d}'
              f'{r["tokens"]:>7d}{r["kappa"]:>6d}{r["kmeans_iterations_mean"]:>6.1f}'
              f'{r["total_ms"]:>9.1f}{cells}')
        for step, ops in (r['operators'] or {}).items():
            listed = ', '.join(f'{op} {ms:.1f}' for op, ms in ops.items())
            print(f'    {step:<14s} {listed}')


# ---------------------------------------------------------------------------- targets
# The project's performance targets on a 2-core CPU (docs/readme/performance.md); each
# is checked only when the run measured what it needs.
SPEEDUP_TARGETS = (  # (ours, peer, batch, at least)
    ('CViG-Ti', 'PViG-Ti', 1, 1.5),
    ('CViG-Ti', 'PViG-Ti', 32, 2.5),
    ('CViG-S', 'PViG-S', 32, 2.0),
    ('CViG-Ti', 'Vig-Ti', 8, 1.1),
    ('CViG-Ti', 'Vig-Ti', 32, 1.1),
)
KNN_SHARE_TARGET = ('CViG-Ti', 224, 0.20)  # partition + build_graph share, at most
SCALING_TARGET = ('CViG-Ti', 448, 5.0)  # time per image over that of the base size, at most


def evaluate_targets(results: dict) -> List[dict]:
    out = []
    throughput = {(r['model'], r['batch']): r for r in results.get('throughput', [])}
    for ours, peer, batch, least in SPEEDUP_TARGETS:
        if (ours, batch) in throughput and (peer, batch) in throughput:
            family = 'pvig' if peer.startswith('PViG') else 'vig'
            value = throughput[(ours, batch)][f'speedup_vs_{family}']
            out.append(_target(f'{ours} / {peer} images/s at batch {batch}', value, '>=',
                               least))
    model, size, most = KNN_SHARE_TARGET
    for r in results.get('profile', []):
        if r['model'] == model and (r['height'], r['width']) == (size, size):
            share = r['share']['partition'] + r['share']['build_graph']
            out.append(_target(f'{model} k-means + k-NN share of forward at {size}, '
                               f'batch {r["batch"]}', share, '<=', most))
    model, size, most = SCALING_TARGET
    for r in results.get('scaling', []):
        if r['model'] == model and r['img_size'] == size:
            out.append(_target(f'{model} time/image {size} over {r["base_size"]}',
                               r['time_ratio'], '<=', most))
    return out


def _target(name: str, value: float, op: str, bound: float) -> dict:
    met = value >= bound if op == '>=' else value <= bound
    return dict(target=name, value=value, bound=f'{op} {bound}', met=bool(met))


# ---------------------------------------------------------------------------- outputs
def write_csv(path: str, rows: List[dict], columns: Sequence[str]):
    with open(path, 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), extrasaction='ignore')
        writer.writeheader()
        for r in rows:
            writer.writerow({k: _csv_cell(r.get(k)) for k in columns})


def _csv_cell(value):
    return f'{value:.6g}' if isinstance(value, float) else value


def profile_csv_rows(rows: List[dict]) -> List[dict]:
    flat = []
    for r in rows:
        for step in (*DEGC_STEPS, OTHER):
            flat.append(dict(model=r['model'], height=r['height'], width=r['width'],
                             batch=r['batch'], tokens=r['tokens'], kappa=r['kappa'],
                             step=step, ms=r['steps_ms'][step], share=r['share'][step]))
    return flat


def plot_throughput(rows: List[dict], path: str, title: str):
    import matplotlib
    matplotlib.use('Agg')  # files only, no display
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=100)
    for model in dict.fromkeys(r['model'] for r in rows):
        pts = [r for r in rows if r['model'] == model]
        batches = [r['batch'] for r in pts]
        ips = np.array([r['images_per_s'] for r in pts])
        # IQR of the time, as images/s: batch/q3 .. batch/q1
        low = ips - np.array([r['batch'] / r['q3_s'] for r in pts])
        high = np.array([r['batch'] / r['q1_s'] for r in pts]) - ips
        style = '-' if pts[0]['family'] not in PEERS else '--'
        ax.errorbar(batches, ips, yerr=[low, high], marker='o', linestyle=style, capsize=3,
                    label=model)
        for r in pts:
            if 'speedup_vs_pvig' in r:
                ax.annotate(f'x{r["speedup_vs_pvig"]:.1f}', (r['batch'], r['images_per_s']),
                            textcoords='offset points', xytext=(4, 6), fontsize=8)
    ax.set_xscale('log', base=2)
    ax.set_xticks(sorted({r['batch'] for r in rows}))
    ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.set_xlabel('batch size')
    ax.set_ylabel('images / s (median, IQR bars)')
    ax.set_title(title + '\nannotated: speedup over PViG of the same size', fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_scaling(rows: List[dict], path: str, title: str):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=100)
    for model in dict.fromkeys(r['model'] for r in rows):
        pts = sorted((r for r in rows if r['model'] == model), key=lambda r: r['tokens'])
        # The ratios go in the legend: next to the points they would overlap.
        ratios = ', '.join(f'x{r["time_ratio"]:.1f}' for r in pts[1:])
        family = pts[0]['family']
        style = ':' if family in PEERS else '--' if ' cs' in model else '-'
        ax.plot([r['tokens'] for r in pts], [r['ms_per_image'] for r in pts], marker='o',
                linestyle=style, label=f'{model} ({ratios})' if ratios else model)
    ax.set_xscale('log')
    ax.set_yscale('log')
    ticks = sorted({r['tokens'] for r in rows})
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel('tokens per image')
    ax.set_ylabel('ms / image (median)')
    ax.set_title(title + '\nin brackets: time per image over that of the smallest size',
                 fontsize=9)
    ax.grid(alpha=0.3, which='both')
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def machine_info(runner: Runner, args) -> dict:
    info = dict(torch=torch.__version__, python=platform.python_version(),
                cpu=_cpu_model(), cpu_count=os.cpu_count(), threads=torch.get_num_threads(),
                omp_wait_policy=os.environ.get('OMP_WAIT_POLICY'),
                device=str(runner.device), amp=args.amp, compile=args.compile,
                load_average_start=list(os.getloadavg()))
    warn_if_oversubscribed(info, 'load_average_start')
    if runner.device.type == 'cuda':
        info['gpu'] = torch.cuda.get_device_name(runner.device)
    return info


def warn_if_oversubscribed(info: dict, when: str):
    """On a CPU busier than its cores, OpenMP's default spin-waiting makes every
    parallel operator wait for a descheduled sibling thread: measured here, a 2-thread
    forward of CViG-Ti took 10x its 1-thread time and the model ratios collapsed towards
    1. ``OMP_WAIT_POLICY=PASSIVE`` (read when torch starts) lets the threads sleep."""
    load = info[when][0]
    if (load > (info['cpu_count'] or 1) and info['device'] == 'cpu' and info['threads'] > 1
            and (info['omp_wait_policy'] or '').upper() != 'PASSIVE'):
        print(f'WARNING: load average {load:.1f} ({when}) exceeds the '
              f'{info["cpu_count"]} cores and OMP_WAIT_POLICY is not PASSIVE: multi-thread '
              'timings will be dominated by threads waiting for each other. Rerun with '
              'OMP_WAIT_POLICY=PASSIVE in the environment, or --threads 1.')


def _cpu_model() -> str:
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def write_outputs(results: dict, out_dir: str):
    os.makedirs(out_dir, exist_ok=True)
    title = (f'{results["machine"]["cpu_count"]}-core {results["machine"]["device"]}, '
             f'{results["machine"]["threads"]} threads, torch {results["machine"]["torch"]}')
    if results.get('throughput'):
        write_csv(osp.join(out_dir, 'throughput.csv'), results['throughput'],
                  ('model', 'family', 'size', 'batch', 'img_size', 'images_per_s',
                   'latency_ms', 'median_s', 'q1_s', 'q3_s', 'min_s', 'max_s', 'repeats',
                   'speedup_vs_pvig', 'speedup_vs_vig'))
        plot_throughput(results['throughput'], osp.join(out_dir, 'throughput.png'), title)
    if results.get('scaling'):
        write_csv(osp.join(out_dir, 'scaling.csv'), results['scaling'],
                  ('model', 'img_size', 'tokens', 'kappa', 'batch', 'ms_per_image',
                   'median_s', 'q1_s', 'q3_s', 'min_s', 'max_s', 'repeats', 'base_size',
                   'time_ratio', 'token_ratio'))
        plot_scaling(results['scaling'], osp.join(out_dir, 'scaling.png'), title)
    if results.get('profile'):
        write_csv(osp.join(out_dir, 'profile.csv'), profile_csv_rows(results['profile']),
                  ('model', 'height', 'width', 'batch', 'tokens', 'kappa', 'step', 'ms',
                   'share'))
    with open(osp.join(out_dir, 'benchmark.json'), 'w') as f:
        json.dump(results, f, indent=1)
    print(f'wrote {sorted(os.listdir(out_dir))} to {out_dir}')


# ------------------------------------------------------------------------------- main
def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Throughput vs batch size (with Vig/PViG peers), resolution scaling and '
        'DEGC profile of ClusterViG backbones',
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('config', nargs='?', help='config whose backbone to time '
                        '(instead of --arch)')
    parser.add_argument('--arch', nargs='+', default=['tiny'], choices=sorted(SIZE_SUFFIX),
                        help='ClusterViG arch(s)')
    parser.add_argument('--arch-dict', help='a custom ClusterViG arch as JSON, e.g. '
                        '\'{"num_blocks": 2, "channels": 32, "num_clusters": 2, '
                        '"groups": 1, "stride": 16}\'')
    parser.add_argument('--backbone-options', nargs='+', action=DictAction,
                        help='extra backbone kwargs, e.g. graph_impl=sparse kmeans_tol=None')
    parser.add_argument('--peers', nargs='*', default=list(PEERS), choices=PEERS,
                        help='mmpretrain peers of matching size to run alongside (none: '
                        'pass the flag alone)')
    parser.add_argument('--peer-size', choices=('tiny', 'small', 'base'),
                        help='peer size for a custom arch or a config without arch')
    parser.add_argument('--batch-sizes', nargs='*', type=int, default=[1, 8, 32],
                        help='throughput batch sizes (none: skip throughput)')
    parser.add_argument('--img-size', type=int, default=224,
                        help='input size for throughput and the model build')
    parser.add_argument('--sizes', nargs='*', type=int, default=[],
                        help='resolution scaling input sizes, e.g. 224 448 896')
    parser.add_argument('--scaling-batch', type=int, default=1)
    parser.add_argument('--cluster-size', type=int, default=49,
                        help='cluster_size of the scaling variant whose kappa follows the '
                        'tokens (0: no such variant)')
    parser.add_argument('--profile', nargs='*', type=parse_profile, default=[],
                        help='DEGC profile inputs, N or HxW with an optional ",BATCH" '
                        '(default 1), e.g. 224 224,32 800x1333')
    parser.add_argument('--op-table', type=int, default=0,
                        help='list the N costliest operators of every step (profiler)')
    parser.add_argument('--warmup', type=int, default=2, help='untimed rounds per shape')
    parser.add_argument('--repeats', type=int, default=5, help='timed rounds per shape')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--amp', action='store_true',
                        help='autocast: bf16 on CPU, fp16 on GPU')
    parser.add_argument('--compile', action='store_true',
                        help='torch.compile the models (throughput and scaling)')
    parser.add_argument('--threads', type=int, help='torch.set_num_threads')
    parser.add_argument('--seed', type=int, default=0, help='weights and inputs')
    parser.add_argument('--out-dir', default='work_dirs/benchmark')
    args = parser.parse_args(argv)
    for name in ('batch_sizes', 'sizes'):
        if any(v < 1 for v in getattr(args, name)):
            parser.error(f'--{name.replace("_", "-")} must be positive')
    if args.repeats < 1:
        parser.error('--repeats must be at least 1')
    if args.device.startswith('cuda') and not torch.cuda.is_available():
        parser.error('--device cuda asked for, but torch sees no GPU')
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    runner = Runner(args.device, args.amp, args.compile, args.seed)
    ours = main_candidates(args)
    results = dict(machine=machine_info(runner, args), settings=vars(args).copy())
    results['settings']['profile'] = [list(s) for s in args.profile]
    if args.batch_sizes:
        candidates = with_peers(ours, args.peers, args.peer_size)
        results['throughput'] = measure_throughput(runner, candidates, args)
    if args.sizes:
        candidates = scaling_candidates(ours, args.cluster_size, args.peers, args.peer_size)
        results['scaling'] = measure_scaling(runner, candidates, args)
    if args.profile:
        results['profile'] = measure_profile(runner, ours, args)
    results['targets'] = evaluate_targets(results)
    results['machine']['load_average_end'] = list(os.getloadavg())
    warn_if_oversubscribed(results['machine'], 'load_average_end')
    for t in results['targets']:
        print(f'[{"met" if t["met"] else "MISSED"}] {t["target"]}: {t["value"]:.3f} '
              f'(target {t["bound"]})')
    write_outputs(results, args.out_dir)
    return results


if __name__ == '__main__':
    main()
