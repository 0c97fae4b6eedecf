"""One GPU check, ready to run: the CUDA tests, the paper's Table VI throughput and the
detection-scale cost of ClusterViG, in at most 8 minutes on a machine with one GPU.

Writes ``gpu_check.json`` and ``gpu_check.md`` (a table per section, the GPU, torch and
CUDA named in both) to ``--out-dir``, after every section, so what ran survives a kill:

* tests: ``tests/test_cuda.py`` and the CUDA test of ``tests/test_sync_free.py``
  (``pytest -k cuda``) in a subprocess under a time limit; counts and failures from
  pytest's JUnit report;
* throughput (paper Table VI): images/s of CViG-Ti/S beside mmpretrain's Vig and
  PyramidVig of the same size at batch 1, 8, 32, 128 and 256 (224x224, float32), by
  ``mmcvig.analysis.measure_throughput``; the batches stop growing when the next one
  would not fit in the time left;
* detection: the backbones as the detection configs build them beside mmdet's
  ResNet-50 and Swin-T at 1x3x800x1344 (inference, float32 and float16 autocast) and
  2x3x800x1344 forward + backward under float16 autocast with a ``GradScaler``, time and
  peak memory (``torch.cuda.max_memory_allocated``), by
  ``mmcvig.analysis.measure_detection``.

Each section runs guarded (an exception is recorded and the next section runs) and
within its share of ``--budget-s``; what was skipped, and why, is in both outputs. The
exit status is 0 when every section ran and every test passed.

GPU machines of this project have no network and no compiler time: the OpenMMLab
packages travel as wheels (``tools/gpu_wheels.sh``, docs/gpu.md), mmcv as mmcv-lite,
without its compiled ops. ``import mmcvig`` copes with that, but ``mmdet.models`` imports
``mmcv.ops`` (RoIAlign, NMS, ...) and with it every backbone built through mmdet's
registry. None of the backbones measured here calls a compiled op, so when mmcv's
extension is missing this tool registers a placeholder for it whose every function
raises, before anything imports mmdet; the JSON says which (``machine.mmcv_ops``).

Examples:
  # on the GPU machine (docs/gpu.md, "The GPU check")
  make gpu-check OUT=$OUT
  python tools/gpu_check.py --out-dir $OUT
  # a CPU dry run at tiny sizes (CUDA tests skipped): what tests/test_gpu_check.py runs
  python tools/gpu_check.py --dry-run --out-dir work_dirs/gpu_check_dry
  # throughput only, tiny arch, two minutes
  python tools/gpu_check.py --sections throughput --arch tiny --budget-s 120
"""
import argparse
import dataclasses
import gc
import importlib
import importlib.util
import json
import os
import os.path as osp
import platform
import subprocess
import sys
import tempfile
import time
import traceback
import types
import xml.etree.ElementTree as ET
from typing import Callable, Dict, List, Optional

START = time.perf_counter()
ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
# Run from a checkout without installing or setting PYTHONPATH.
sys.path.insert(0, ROOT)

import torch  # noqa: E402


def provide_mmcv_ops() -> str:
    """How mmcv's compiled ops are provided: 'compiled', or a placeholder extension
    (mmcv-lite) whose functions raise ``RuntimeError`` when called. Must run before
    anything imports mmdet or mmpretrain (mmpretrain tries ``mmdet.models`` and leaves
    it out when that fails)."""
    try:
        importlib.import_module('mmcv._ext')
        return 'compiled'
    except ImportError:
        pass
    ext = types.ModuleType('mmcv._ext')

    def unavailable(name: str):
        if name.startswith('__'):
            raise AttributeError(name)

        def call(*args, **kwargs):
            raise RuntimeError(f'mmcv.ops {name}: mmcv has no compiled ops here (mmcv-lite); '
                               'tools/gpu_check.py registered a placeholder')

        return call

    ext.__getattr__ = unavailable
    sys.modules['mmcv._ext'] = ext
    return 'placeholder (mmcv-lite, no compiled ops)'


MMCV_OPS = provide_mmcv_ops()

from mmcvig import analysis  # noqa: E402

SECTIONS = ('tests', 'throughput', 'detection')
# Share of the time left when a section starts: the last one gets all that is left.
SHARES = dict(tests=0.3, throughput=0.45, detection=1.0)
# Every test of test_cuda.py (its module name says cuda) and test_sync_free's CUDA test.
CUDA_TEST_FILES = ('tests/test_cuda.py', 'tests/test_sync_free.py')
CUDA_TEST_SELECTION = 'cuda'
DETECTION_MODES = {  # name: (forward + backward, autocast)
    'inference': (False, False),
    'inference-amp': (False, True),
    'train-amp': (True, True),
    'train': (True, False),
}
# A training step at batch B costs about this many inference forwards per image.
TRAIN_COST = 3
# Estimates of the next step's time from the last one are linear: leave room.
SAFETY = 1.5
DRY_RUN = dict(device='cpu', batch_sizes=[1, 2], detection_size=(64, 96), warmup=0,
               repeats=1)


# ---------------------------------------------------------------------- the machine
def machine_info(device: torch.device) -> dict:
    info = dict(python=platform.python_version(), torch=torch.__version__,
                cuda=torch.version.cuda, cudnn=None, device=str(device),
                cpu_count=os.cpu_count(), gpu=None, mmcv_ops=MMCV_OPS,
                packages=package_versions())
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=torch.cuda.get_device_name(0), gpu_count=torch.cuda.device_count(),
                    gpu_memory_gib=props.total_memory / 2**30,
                    compute_capability=f'{props.major}.{props.minor}',
                    cudnn=torch.backends.cudnn.version(),
                    tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
                    tf32_cudnn=torch.backends.cudnn.allow_tf32)
    return info


def package_versions() -> dict:
    out = {}
    for name in ('torchvision', 'timm', 'torch_geometric', 'mmengine', 'mmcv', 'mmdet',
                 'mmpretrain', 'numpy', 'pytest'):
        try:
            out[name] = importlib.import_module(name).__version__
        except Exception as err:  # a missing or broken package is a fact to record
            out[name] = f'unavailable ({type(err).__name__})'
    return out


def machine_line(machine: dict) -> str:
    gpu = machine['gpu'] or 'no GPU visible'
    if machine.get('gpu_memory_gib'):
        gpu += (f' ({machine["gpu_memory_gib"]:.0f} GiB, compute capability '
                f'{machine["compute_capability"]})')
    return (f'{gpu}; torch {machine["torch"]}, CUDA {machine["cuda"]}, cuDNN '
            f'{machine["cudnn"]}, Python {machine["python"]}; mmcv '
            f'{machine["packages"]["mmcv"]} ({machine["mmcv_ops"]}); ran on {machine["device"]}')


def free_memory():
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# ------------------------------------------------------------------------ the tests
def run_tests(args, seconds: float) -> dict:
    """The CUDA tests in a pytest subprocess, stopped after ``seconds``."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (ROOT, os.environ.get('PYTHONPATH')) if p))
    env.pop('MMCVIG_TEST_DEVICE', None)  # the tests' own CPU mode: not here
    if args.device.type != 'cuda':
        env['CUDA_VISIBLE_DEVICES'] = ''  # the CPU run skips them
    with tempfile.TemporaryDirectory() as tmp:
        report = osp.join(tmp, 'junit.xml')
        command = [sys.executable, '-m', 'pytest', *CUDA_TEST_FILES, '-k',
                   CUDA_TEST_SELECTION, '-q', '-p', 'no:cacheprovider', f'--junitxml={report}']
        if importlib.util.find_spec('pytest_timeout'):
            command += ['--timeout', str(max(30, int(seconds / 2)))]
        shown = ' '.join(command[1:]).replace(report, 'REPORT')
        try:
            proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                                  timeout=max(seconds, 1))
        except subprocess.TimeoutExpired as err:
            return dict(status='timeout', command=shown, output_tail=_tail(err.stdout))
        out = dict(command=shown, returncode=proc.returncode,
                   output_tail=_tail(proc.stdout + proc.stderr))
        if osp.exists(report):
            out.update(junit_counts(report))
        out['status'] = 'passed' if proc.returncode == 0 else 'failed'
        return out


def _tail(text, size: int = 3000) -> str:
    if isinstance(text, bytes):
        text = text.decode(errors='replace')
    return (text or '')[-size:]


def junit_counts(path: str) -> dict:
    """Counts of pytest's JUnit XML report, and the tests that did not pass."""
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == 'testsuite' else list(root.iter('testsuite'))
    counts = {key: sum(int(s.get(key, 0)) for s in suites)
              for key in ('tests', 'failures', 'errors', 'skipped')}
    counts['passed'] = counts['tests'] - counts['failures'] - counts['errors'] - counts['skipped']
    outcomes = dict(failure='failed', error='error', skipped='skipped')
    cases = []
    for case in root.iter('testcase'):
        name = f'{case.get("classname")}::{case.get("name")}'
        outcome, message = 'passed', ''
        for tag, word in outcomes.items():
            found = case.find(tag)
            if found is not None:
                outcome, message = word, (found.get('message') or '')[:500]
                break
        cases.append(dict(name=name, outcome=outcome, seconds=float(case.get('time', 0)),
                          message=message))
    return dict(counts=counts, cases=cases)


def failure(err: Exception, message_chars: int = 1000, traceback_chars: int = 3000,
            **where) -> dict:
    """A caught exception as the JSON records it: where it happened, its type and
    message, and the end of its traceback (called in its ``except`` block)."""
    return dict(where, error=f'{type(err).__name__}: {err}'[:message_chars],
                traceback=traceback.format_exc()[-traceback_chars:])


# ------------------------------------------------------------------- the throughput
def built_once(candidate: analysis.Candidate) -> analysis.Candidate:
    """The candidate, its model built at the first call and reused after: every batch
    size times the same weights without building them again."""
    built = {}

    def make(img_size: int):
        if img_size not in built:
            built[img_size] = candidate.make(img_size)
        return built[img_size]

    return dataclasses.replace(candidate, make=make)


def run_throughput(args, seconds: float) -> dict:
    deadline = time.perf_counter() + seconds
    runner = analysis.Runner(str(args.device), seed=args.seed)
    ours = [analysis.cvig_candidate(arch) for arch in args.arch]
    candidates = [built_once(c) for c in analysis.with_peers(ours, analysis.PEERS)]
    start = time.perf_counter()
    for c in candidates:
        runner.model(c.make, args.img_size)
    rows, skipped, errors = [], [], []
    out = dict(img_size=args.img_size, precision='float32', warmup=args.warmup,
               repeats=args.repeats, models=[c.name for c in candidates],
               build_s=time.perf_counter() - start, rows=rows, skipped=skipped,
               errors=errors)
    last = None  # (batch, seconds)
    for i, batch in enumerate(args.batch_sizes):
        left = deadline - time.perf_counter()
        estimate = SAFETY * last[1] * batch / last[0] if last else 0.0
        if left <= 0 or estimate > left:
            skipped += [dict(batch=b, reason=f'time: about {estimate:.0f} s needed for '
                             f'batch {batch}, {max(left, 0):.0f} s left')
                        for b in args.batch_sizes[i:]]
            break
        start = time.perf_counter()
        try:
            rows += analysis.measure_throughput(runner, candidates, [batch], args.img_size,
                                                warmup=args.warmup, repeats=args.repeats)
        except Exception as err:  # out of memory, say: the smaller batches stay recorded
            errors.append(failure(err, batch=batch))
            skipped += [dict(batch=b, reason=f'{type(err).__name__} at batch {batch}')
                        for b in args.batch_sizes[i + 1:]]
            break
        last = (batch, time.perf_counter() - start)
        print(f'throughput, batch {batch}: ' + ', '.join(
            f'{r["model"]} {r["images_per_s"]:.1f}' for r in rows if r['batch'] == batch)
            + f' img/s ({last[1]:.1f} s)', flush=True)
    out['status'] = 'ok' if not errors else 'partial'
    return out


# -------------------------------------------------------------------- the detection
class AmpTrainingRunner(analysis.Runner):
    """:class:`~mmcvig.analysis.Runner` whose training step is one of AMP training:
    the loss scaled by a ``GradScaler`` for the backward, then the scaler's step (unscale,
    Inf/NaN check, scale update) of an SGD optimiser with learning rate 0, so the
    weights, hence ClusterViG's partitions, stay those of the first round. One optimiser
    and scaler per model."""

    def __init__(self, device: str, amp: bool, seed: int = 0):
        super().__init__(device, amp, seed=seed)
        self.states = {}

    def train_step(self, model, x) -> float:
        if id(model) not in self.states:  # the model is kept: its id stays its own
            self.states[id(model)] = (model, torch.optim.SGD(model.parameters(), lr=0.0),
                                      torch.amp.GradScaler(self.device.type, enabled=self.amp))
        _, optimizer, scaler = self.states[id(model)]
        with self.autocast():
            loss = sum(out.float().mean() for out in model(x))
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())


def run_detection(args, seconds: float) -> dict:
    deadline = time.perf_counter() + seconds
    height, width = args.detection_size
    candidates = analysis.detection_candidates(args.arch, args.detection_peers)
    tables, skipped, errors, modes = {}, [], [], {}
    last = None  # (train, seconds)
    for mode in args.detection_modes:
        train, amp = DETECTION_MODES[mode]
        batch = args.train_batch if train else 1
        left = deadline - time.perf_counter()
        estimate = 0.0
        if last:
            estimate = SAFETY * last[1] * (TRAIN_COST * batch if train and not last[0] else 1)
        if left <= 0 or estimate > left:
            skipped.append(dict(mode=mode, reason=f'time: about {estimate:.0f} s needed, '
                                f'{max(left, 0):.0f} s left'))
            continue
        runner = AmpTrainingRunner(str(args.device), amp, seed=args.seed)
        dtype = str(runner.autocast().fast_dtype).split('.')[-1] if amp else 'float32'
        start = time.perf_counter()
        try:
            tables[mode] = analysis.measure_detection(runner, candidates, batch, height, width,
                                                      train, warmup=args.warmup,
                                                      repeats=args.repeats)
        except Exception as err:  # recorded; the next mode runs
            errors.append(failure(err, mode=mode))
        finally:
            del runner
            free_memory()
        seconds_taken = time.perf_counter() - start
        modes[mode] = dict(train=train, autocast=dtype, grad_scaler=train and amp,
                           batch=batch, height=height, width=width, seconds=seconds_taken)
        last = (train, seconds_taken)
        for r in tables.get(mode, []):
            print(f'detection {mode}: {r["model"]} {r["median_s"] * 1e3:.1f} ms, peak '
                  f'{r["peak_mb"]:.0f} MiB', flush=True)
    return dict(status='ok' if not errors else 'partial', warmup=args.warmup,
                repeats=args.repeats, models=[c.name for c in candidates], modes=modes,
                tables=tables, skipped=skipped, errors=errors)


# ---------------------------------------------------------------------- the sections
def run_section(func: Callable[..., dict], args, seconds: float) -> dict:
    """``func(args, seconds)``, its exception recorded instead of raised."""
    start = time.perf_counter()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    try:
        record = func(args, seconds)
    except Exception as err:  # recorded; the next section runs
        record = failure(err, 2000, 4000, status='error')
    record.update(seconds=time.perf_counter() - start, budget_s=seconds)
    if args.device.type == 'cuda':
        record['cuda_max_memory_allocated_mib'] = torch.cuda.max_memory_allocated() / 2**20
    free_memory()
    return record


SECTION_FUNCS: Dict[str, Callable[..., dict]] = dict(tests=run_tests,
                                                     throughput=run_throughput,
                                                     detection=run_detection)
PASSING = ('ok', 'passed', 'not selected')


# ------------------------------------------------------------------------- markdown
def markdown(results: dict) -> str:
    lines = ['# GPU check', '', machine_line(results['machine']) + '.', '',
             f'{"Dry run at tiny sizes on the CPU. " if results["settings"]["dry_run"] else ""}'
             f'{results.get("wall_s", time.perf_counter() - START):.0f} s in all, budget '
             f'{results["settings"]["budget_s"]:.0f} s.', '',
             '| section | status | time | budget |', '|---|---|---|---|']
    for name, sec in results['sections'].items():
        time_cell = f'{sec["seconds"]:.0f} s' if 'seconds' in sec else ''
        budget_cell = f'{sec["budget_s"]:.0f} s' if 'budget_s' in sec else ''
        lines.append(f'| {name} | {status_cell(name, sec)} | {time_cell} | {budget_cell} |')
    sections = results['sections']
    for name, writer in (('tests', tests_markdown), ('throughput', throughput_markdown),
                         ('detection', detection_markdown)):
        sec = sections.get(name)
        if sec and sec.get('status') != 'not selected':
            block = writer(sec)
            if sec.get('error'):
                block += ['', f'Error: `{sec["error"].splitlines()[0][:300]}`']
            while block and not block[-1]:
                block.pop()
            lines += [''] + block
    return '\n'.join(lines) + '\n'


def status_cell(name: str, sec: dict) -> str:
    cell = sec.get('status', '?')
    if name == 'tests' and 'counts' in sec:
        c = sec['counts']
        cell += (f': {c["passed"]} passed, {c["failures"]} failed, {c["errors"]} errors, '
                 f'{c["skipped"]} skipped')
    skipped = sec.get('skipped') or []
    if skipped:
        cell += f'; {len(skipped)} skipped for time or memory'
    return cell


def tests_markdown(sec: dict) -> List[str]:
    lines = ['## CUDA tests', '']
    if 'command' in sec:
        lines += [f'`python {sec["command"]}`', '']
    not_passed = [c for c in sec.get('cases', []) if c['outcome'] in ('failed', 'error')]
    if not_passed:
        lines += ['| test | outcome | message |', '|---|---|---|']
        lines += [f'| {c["name"]} | {c["outcome"]} | {_cell(c["message"])} |'
                  for c in not_passed]
    elif 'counts' in sec:
        lines.append(f'{sec["counts"]["passed"]} passed, {sec["counts"]["skipped"]} skipped.')
    else:
        lines.append(f'No report: {sec.get("status")}.')
    return lines


def _cell(text: str) -> str:
    return ' '.join(str(text).split()).replace('|', '/')[:200]


def throughput_markdown(sec: dict) -> List[str]:
    lines = [f'## Throughput (paper Table VI), images/s, {sec.get("precision", "float32")}, '
             f'{sec.get("img_size")}x{sec.get("img_size")}', '',
             f'Median over the timed rounds ({sec.get("repeats")}, after {sec.get("warmup")} '
             'warm-up), models round-robin; ratios: time of the peer over ours.', '']
    rows = sec.get('rows') or []
    ours = [r for r in rows if r['family'] == 'cvig']
    for size in dict.fromkeys(r['size'] for r in ours):
        names = list(dict.fromkeys(r['model'] for r in rows if r['size'] == size))
        ours_name = next(r['model'] for r in ours if r['size'] == size)
        head = names + [f'{ours_name} / {peer}' for peer in names if peer != ours_name]
        lines += ['| batch | ' + ' | '.join(head) + ' |', '|---' * (len(head) + 1) + '|']
        for batch in dict.fromkeys(r['batch'] for r in rows):
            by_name = {r['model']: r for r in rows if r['batch'] == batch}
            if ours_name not in by_name:
                continue
            cells = [f'{by_name[n]["images_per_s"]:.1f}' if n in by_name else '' for n in names]
            cells += [f'{by_name[n]["median_s"] / by_name[ours_name]["median_s"]:.2f}x'
                      if n in by_name else '' for n in names if n != ours_name]
            lines.append(f'| {batch} | ' + ' | '.join(cells) + ' |')
        lines.append('')
    return lines + _skipped_lines(sec, 'batch')


def detection_markdown(sec: dict) -> List[str]:
    lines = ['## Detection scale', '',
             'Backbones as the detection configs build them; median over the timed rounds '
             f'({sec.get("repeats")}, after {sec.get("warmup")} warm-up), round-robin. Peak '
             'memory: weights + input + the peak the step allocates.']
    for mode, rows in (sec.get('tables') or {}).items():
        info = sec['modes'][mode]
        what = 'forward + backward' if info['train'] else 'inference forward'
        amp = f', {info["autocast"]} autocast' if info['autocast'] != 'float32' else ', float32'
        scaler = ' + GradScaler' if info['grad_scaler'] else ''
        lines += ['', f'### {mode}: {what}, {info["batch"]}x3x{info["height"]}x'
                  f'{info["width"]}{amp}{scaler}', '',
                  f'| backbone | time | vs {rows[0]["reference"]} | peak memory | vs '
                  f'{rows[0]["reference"]} |', '|---|---|---|---|---|']
        lines += [f'| {r["model"]} | {r["median_s"] * 1e3:.1f} ms | {r["relative"]:.2f}x | '
                  f'{r["peak_mb"]:.0f} MiB | {r["memory_relative"]:.2f}x |' for r in rows]
    for e in sec.get('errors') or []:
        lines += ['', f'{e["mode"]}: `{e["error"].splitlines()[0][:300]}`']
    lines += [''] + _skipped_lines(sec, 'mode')
    return lines


def _skipped_lines(sec: dict, key: str) -> List[str]:
    return [f'Skipped {key} {s[key]}: {s["reason"]}.' for s in sec.get('skipped') or []]


def write_outputs(results: dict, out_dir: str):
    os.makedirs(out_dir, exist_ok=True)
    with open(osp.join(out_dir, 'gpu_check.json'), 'w') as f:
        json.dump(results, f, indent=1, default=str)
    with open(osp.join(out_dir, 'gpu_check.md'), 'w') as f:
        f.write(markdown(results))


# ----------------------------------------------------------------------------- main
def parse_size(text: str):
    parts = text.lower().split('x')
    if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f'expected HxW, got {text!r}')
    return int(parts[0]), int(parts[1])


def parse_args(argv: Optional[List[str]] = None):
    parser = argparse.ArgumentParser(
        description='CUDA tests, Table VI throughput and detection-scale cost of ClusterViG '
        'on one GPU, within a time budget',
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('--out-dir', default='work_dirs/gpu_check',
                        help='where gpu_check.json and gpu_check.md go')
    parser.add_argument('--budget-s', type=float, default=420.0,
                        help='seconds for all sections, from the start of the process')
    parser.add_argument('--dry-run', action='store_true',
                        help='CPU, tiny batches and detection size, one round, CUDA tests '
                        f'skipped: {DRY_RUN}')
    parser.add_argument('--sections', nargs='+', default=list(SECTIONS), choices=SECTIONS)
    parser.add_argument('--device', help='default: cuda if available, else cpu')
    parser.add_argument('--arch', nargs='+', default=['tiny', 'small'],
                        choices=['tiny', 'small', 'base'], help='ClusterViG sizes')
    parser.add_argument('--batch-sizes', nargs='+', type=int, default=[1, 8, 32, 128, 256],
                        help='throughput batch sizes, smallest first')
    parser.add_argument('--img-size', type=int, default=224, help='throughput input size')
    parser.add_argument('--detection-size', type=parse_size, default=(800, 1344),
                        metavar='HxW', help='detection input')
    parser.add_argument('--train-batch', type=int, default=2,
                        help='images per detection training step (inference: 1)')
    parser.add_argument('--detection-modes', nargs='+', choices=list(DETECTION_MODES),
                        default=['inference', 'train-amp', 'inference-amp'],
                        help='in this order; the later ones are skipped first')
    parser.add_argument('--detection-peers', nargs='+', default=['ResNet-50', 'Swin-T'],
                        choices=list(analysis.DETECTION_PEERS))
    parser.add_argument('--warmup', type=int, default=2, help='untimed rounds per shape')
    parser.add_argument('--repeats', type=int, default=5, help='timed rounds per shape')
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args(argv)
    if args.dry_run:
        for key, value in DRY_RUN.items():
            setattr(args, key, value)
    args.device = torch.device(args.device or ('cuda' if torch.cuda.is_available() else 'cpu'))
    if args.device.type == 'cuda' and not torch.cuda.is_available():
        parser.error('--device cuda asked for, but torch sees no GPU')
    if min(args.batch_sizes) < 1 or args.repeats < 1 or args.warmup < 0:
        parser.error('batch sizes and --repeats must be positive, --warmup not negative')
    args.batch_sizes = sorted(args.batch_sizes)
    return args


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    deadline = START + args.budget_s
    settings = {k: (str(v) if isinstance(v, torch.device) else v) for k, v in vars(args).items()}
    results = dict(machine=machine_info(args.device), settings=settings, sections={})
    print(machine_line(results['machine']), flush=True)
    for name in SECTIONS:
        if name not in args.sections:
            results['sections'][name] = dict(status='not selected')
            continue
        seconds = max(0.0, (deadline - time.perf_counter()) * SHARES[name])
        print(f'== {name}: {seconds:.0f} s', flush=True)
        if seconds < 1:
            results['sections'][name] = dict(status='skipped', reason='no time left',
                                             seconds=0.0, budget_s=seconds)
        else:
            results['sections'][name] = run_section(SECTION_FUNCS[name], args, seconds)
        print(f'   {name}: {status_cell(name, results["sections"][name])}', flush=True)
        write_outputs(results, args.out_dir)
    results['wall_s'] = time.perf_counter() - START
    results['ok'] = all(s['status'] in PASSING for s in results['sections'].values())
    write_outputs(results, args.out_dir)
    print(f'wrote gpu_check.json and gpu_check.md to {args.out_dir} '
          f'({results["wall_s"]:.0f} s; {"ok" if results["ok"] else "NOT ok"})')
    return 0 if results['ok'] else 1


if __name__ == '__main__':
    sys.exit(main())
