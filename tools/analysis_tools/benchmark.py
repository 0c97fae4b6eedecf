"""Throughput, resolution scaling, DEGC profile and detection-scale cost of ClusterViG.

The measurements are :mod:`mmcvig.analysis`; this tool parses arguments, prints tables
and writes ``benchmark.json`` plus a CSV (and a PNG plot where one helps) per
measurement to ``--out-dir``. Any combination runs in one process, models round-robin,
so every ratio in the output shares the machine's noise:

* throughput (``--batch-sizes``, paper Table VI): images/s of each ClusterViG against
  mmpretrain's Vig and PyramidVig of the same size;
* scaling (``--sizes``): time per image against the token count, for ClusterViG, its
  ``--cluster-size`` variant (kappa follows the tokens) and Vig;
* profile (``--profile``): share of the forward in the four DEGC steps and in the rest,
  from the steps' ``torch.profiler`` ranges and, without a profiler, from every step
  re-run on its own; k-means iterations from the forward's intermediates;
  ``--op-table N`` lists the N costliest operators of every step;
* autocast error (``--autocast-error``): relative error of each model's output under
  float16 and bfloat16 autocast against float32, beside Vig and PyramidVig, with
  BatchNorm as built and calibrated (see :mod:`mmcvig.analysis.precision`);
* float32 overhead (``--float32-overhead 800x1344``): what keeping DEGC's k-means,
  k-NN and cluster means in float32 costs a forward under autocast;
* detection (``--detection inference train``): the backbones as the detection configs
  build them (``--arch`` sizes; mmdet's ResNet-50, Swin-T, PVTv2-b2 beside them), at
  1x3x800x1344 in inference and 2x3x800x1344 forward + backward, time and peak memory.

Examples:
  # Table VI style, tiny and small against Vig/PViG, 2 threads
  python tools/analysis_tools/benchmark.py --arch tiny small --batch-sizes 1 8 32 --threads 2
  # resolution scaling and profile only
  python tools/analysis_tools/benchmark.py --arch tiny --batch-sizes --sizes 224 448 896 \\
      --profile 224 224,32 --op-table 6
  # detection scale: inference and training tables of CViG-Ti/S and mmdet's backbones
  python tools/analysis_tools/benchmark.py --arch tiny small --batch-sizes \\
      --detection inference train --warmup 1 --repeats 3 --threads 2
  # mixed-precision error of CViG-Ti/S/B against Vig/PViG of the same size, at 224
  python tools/analysis_tools/benchmark.py --arch tiny small base --batch-sizes \\
      --autocast-error --threads 2
  # the backbone of a config (peers matched by its arch)
  python tools/analysis_tools/benchmark.py configs/cvig-ti_8xb128_in1k.py
"""
import argparse
import csv
import json
import os
import os.path as osp
import platform
import sys
from typing import List, Sequence, Tuple

# Run from a checkout without installing or setting PYTHONPATH.
sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from mmengine.config import DictAction  # noqa: E402

import mmcvig  # noqa: E402,F401  (registers ClusterViG)
from mmcvig import analysis  # noqa: E402
from mmcvig.analysis import DEGC_STEPS, OTHER, PEERS, SIZE_SUFFIX  # noqa: E402

DETECTION_MODES = ('inference', 'train')


# ----------------------------------------------------------------------------- models
def main_candidates(args) -> List[analysis.Candidate]:
    """The models under test, from the config, ``--arch-dict`` or ``--arch``."""
    options = dict(args.backbone_options or {})
    if args.config:
        return [analysis.config_candidate(args.config, options)]
    if args.arch_dict:
        return [analysis.cvig_candidate(json.loads(args.arch_dict), options)]
    return [analysis.cvig_candidate(arch, options) for arch in args.arch]


def detection_archs(args) -> list:
    return [json.loads(args.arch_dict)] if args.arch_dict else list(args.arch)


def with_peers(candidates, args):
    if args.peers and not args.peer_size and not any(c.size for c in candidates):
        print('No peer size known for these models (custom arch or config without arch): '
              'peers skipped; pass --peer-size tiny|small|base to add them.')
    return analysis.with_peers(candidates, args.peers, args.peer_size)


# ----------------------------------------------------------------------------- tables
def print_throughput(rows: List[dict]):
    for r in rows:
        spread = f'{r["batch"] / r["q3_s"]:.2f}-{r["batch"] / r["q1_s"]:.2f}'
        extra = ''.join(f'  x{r[k]:.2f} vs {k[len("speedup_vs_"):]}'
                        for k in ('speedup_vs_pvig', 'speedup_vs_vig') if k in r)
        print(f'b={r["batch"]:<4d} {r["model"]:<18s} {r["images_per_s"]:8.2f} img/s '
              f'(IQR {spread})  latency {r["latency_ms"]:9.1f} ms{extra}')


def print_scaling(rows: List[dict]):
    for r in rows:
        print(f'{r["img_size"]:5d}px {r["tokens"]:6d} tokens  {r["model"]:<18s} '
              f'kappa {str(r["kappa"]):>4s}  {r["ms_per_image"]:9.1f} ms/image  '
              f'x{r["time_ratio"]:.2f} vs {r["base_size"]}px')


def print_profile(rows: List[dict]):
    header = ''.join(f'{s:>17s}' for s in (*DEGC_STEPS, OTHER))
    print(f'{"model":<12s}{"batch":>6s}{"input":>10s}{"tokens":>7s}{"kappa":>6s}'
          f'{"km it":>6s}{"ms":>9s}{"prof ms":>9s}{header}')
    for r in rows:
        cells = ''.join(f'{r["steps_ms"][s]:9.1f} ({100 * r["share"][s]:4.1f}%)'
                        for s in (*DEGC_STEPS, OTHER))
        iters = r['kmeans_iterations_mean']
        print(f'{r["model"]:<12s}{r["batch"]:>6d}{r["height"]:>5d}x{r["width"]:<4d}'
              f'{r["tokens"]:>7d}{r["kappa"]:>6d}'
              f'{"-" if iters is None else f"{iters:.1f}":>6s}'
              f'{r["total_ms"]:>9.1f}{r["profiled_ms"]:>9.1f}{cells}')
        isolated = ''.join(f'{r["isolated_ms"][s]:9.1f} ({100 * r["isolated_share"][s]:4.1f}%)'
                           for s in (*DEGC_STEPS, OTHER))
        print(f'{"  each step alone, no profiler":<63s}{isolated}')
        if r.get('knn_floor_ms') is not None:
            print(f'  exact k-NN inside the partitions: {r["knn_gmacs"]:.2f} GMACs, at least '
                  f'{r["knn_floor_ms"]:.1f} ms at this device\'s float32 matrix-product rate '
                  f'({100 * r["knn_floor_share"]:.1f}% of the forward)')
        for step, ops in (r['operators'] or {}).items():
            listed = ', '.join(f'{op} {ms:.1f}' for op, ms in ops.items())
            print(f'    {step:<14s} {listed}')


def print_autocast_error(rows: List[dict]):
    print('autocast error: ||out - out_fp32|| / ||out_fp32|| of the last output '
          '(nan: not finite)')
    for r in rows:
        errors = '  '.join(f'{k[len("error_"):]} {r[k]:7.4f}' for k in r
                           if k.startswith('error_'))
        print(f'  {r["model"]:<10s} BN {r["bn"]:<11s} float32 max {r["float32_max"]:10.4g}  '
              f'{errors}')


def print_detection(mode: str, rows: List[dict]):
    r0 = rows[0]
    print(f'detection scale, {mode}: {r0["batch"]}x3x{r0["height"]}x{r0["width"]}, '
          f'relative to {r0["reference"]}')
    for r in rows:
        print(f'  {r["model"]:<10s} {r["median_s"]:8.3f} s (IQR {r["q1_s"]:.3f}-'
              f'{r["q3_s"]:.3f})  x{r["relative"]:.2f} (paired '
              f'x{r["paired"]["paired_median"]:.2f})  peak {r["peak_mb"]:8.0f} MiB '
              f'(x{r["memory_relative"]:.2f}; step {r["step_peak_mb"]:.0f}, '
              f'weights {r["state_mb"]:.0f})')


# ---------------------------------------------------------------------------- outputs
THROUGHPUT_COLUMNS = ('model', 'family', 'size', 'batch', 'img_size', 'images_per_s',
                      'latency_ms', 'median_s', 'q1_s', 'q3_s', 'min_s', 'max_s',
                      'repeats', 'speedup_vs_pvig', 'speedup_vs_vig')
SCALING_COLUMNS = ('model', 'img_size', 'tokens', 'kappa', 'batch', 'ms_per_image',
                   'median_s', 'q1_s', 'q3_s', 'min_s', 'max_s', 'repeats', 'base_size',
                   'time_ratio', 'token_ratio')
PROFILE_COLUMNS = ('model', 'height', 'width', 'batch', 'tokens', 'kappa', 'step', 'ms',
                   'share', 'isolated_ms', 'isolated_share')
AUTOCAST_COLUMNS = ('model', 'family', 'bn', 'img_size', 'batch', 'float32_max',
                    'error_float16', 'error_bfloat16')
DETECTION_COLUMNS = ('model', 'family', 'mode', 'batch', 'height', 'width', 'median_s',
                     'q1_s', 'q3_s', 'min_s', 'max_s', 'repeats', 'reference', 'relative',
                     'peak_mb', 'step_peak_mb', 'state_mb', 'memory_relative')


def write_csv(path: str, rows: List[dict], columns: Sequence[str]):
    with open(path, 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), extrasaction='ignore')
        writer.writeheader()
        for r in rows:
            writer.writerow({k: _csv_cell(r.get(k)) for k in columns})


def _csv_cell(value):
    return f'{value:.6g}' if isinstance(value, float) else value


def profile_csv_rows(rows: List[dict]) -> List[dict]:
    """One row per model, input and step (the four DEGC steps and ``other``)."""
    return [dict(model=r['model'], height=r['height'], width=r['width'], batch=r['batch'],
                 tokens=r['tokens'], kappa=r['kappa'], step=step, ms=r['steps_ms'][step],
                 share=r['share'][step], isolated_ms=r['isolated_ms'][step],
                 isolated_share=r['isolated_share'][step])
            for r in rows for step in (*DEGC_STEPS, OTHER)]


def _pyplot():
    import matplotlib
    matplotlib.use('Agg')  # files only, no display
    import matplotlib.pyplot as plt
    return matplotlib, plt


def plot_throughput(rows: List[dict], path: str, title: str):
    matplotlib, plt = _pyplot()
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
    _finish(fig, ax, path)


def plot_scaling(rows: List[dict], path: str, title: str):
    matplotlib, plt = _pyplot()
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
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.set_xlabel('tokens per image')
    ax.set_ylabel('ms / image (median)')
    ax.set_title(title + '\nin brackets: time per image over that of the smallest size',
                 fontsize=9)
    _finish(fig, ax, path)


def _finish(fig, ax, path: str):
    _, plt = _pyplot()
    ax.grid(alpha=0.3, which='both')
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def machine_info(runner: analysis.Runner, args) -> dict:
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
    machine = results['machine']
    title = (f'{machine["cpu_count"]}-core {machine["device"]}, {machine["threads"]} '
             f'threads, torch {machine["torch"]}')
    if results.get('throughput'):
        write_csv(osp.join(out_dir, 'throughput.csv'), results['throughput'],
                  THROUGHPUT_COLUMNS)
        plot_throughput(results['throughput'], osp.join(out_dir, 'throughput.png'), title)
    if results.get('scaling'):
        write_csv(osp.join(out_dir, 'scaling.csv'), results['scaling'], SCALING_COLUMNS)
        plot_scaling(results['scaling'], osp.join(out_dir, 'scaling.png'), title)
    if results.get('profile'):
        write_csv(osp.join(out_dir, 'profile.csv'), profile_csv_rows(results['profile']),
                  PROFILE_COLUMNS)
    if results.get('autocast_error'):
        write_csv(osp.join(out_dir, 'autocast_error.csv'), results['autocast_error'],
                  AUTOCAST_COLUMNS)
    for mode, rows in (results.get('detection') or {}).items():
        write_csv(osp.join(out_dir, f'detection_{mode}.csv'), rows, DETECTION_COLUMNS)
    with open(osp.join(out_dir, 'benchmark.json'), 'w') as f:
        json.dump(results, f, indent=1)
    print(f'wrote {sorted(os.listdir(out_dir))} to {out_dir}')


# ------------------------------------------------------------------------------- main
def parse_input(text: str) -> Tuple[int, int, int]:
    """'224' -> (224, 224, batch 1); '800x1333' -> (800, 1333, 1); '224,32' -> (224,
    224, 32)."""
    size, _, batch = text.lower().partition(',')
    parts = size.split('x') + [batch or '1']
    if len(parts) not in (2, 3) or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(
            f'input must be N, HxW, N,BATCH or HxW,BATCH (positive), got {text!r}')
    return int(parts[0]), int(parts[-2]), int(parts[-1])


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Throughput vs batch size (with Vig/PViG peers), resolution scaling, '
        'DEGC profile and detection-scale cost of ClusterViG backbones',
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
    parser.add_argument('--profile', nargs='*', type=parse_input, default=[],
                        help='DEGC profile inputs, N or HxW with an optional ",BATCH" '
                        '(default 1), e.g. 224 224,32 800x1333')
    parser.add_argument('--op-table', type=int, default=0,
                        help='list the N costliest operators of every step (profiler)')
    parser.add_argument('--autocast-error', action='store_true',
                        help='relative error under float16 and bfloat16 autocast against '
                        'float32, at --img-size, batch 2, beside the peers')
    parser.add_argument('--float32-overhead', type=parse_input, metavar='HxW',
                        help='inference under autocast (bf16 on CPU, fp16 on GPU) of the '
                        'first --arch as the detection config builds it, with DEGC\'s '
                        'float32 steps against autocast reaching them, e.g. 800x1344')
    parser.add_argument('--detection', nargs='*', choices=DETECTION_MODES,
                        help='detection-scale tables of the --arch backbones as the '
                        'detection configs build them, beside --detection-peers (the flag '
                        'alone: both modes)')
    parser.add_argument('--detection-peers', nargs='*', default=list(analysis.DETECTION_PEERS),
                        choices=list(analysis.DETECTION_PEERS),
                        help='mmdet backbones of the detection tables')
    parser.add_argument('--detection-size', type=parse_input,
                        default=(*analysis.TRAIN_SHAPE[1:], 1), metavar='HxW',
                        help='detection input (1333x800 padded to a multiple of 32)')
    parser.add_argument('--detection-train-batch', type=int, default=analysis.TRAIN_SHAPE[0],
                        help='images per training step (inference: 1)')
    parser.add_argument('--warmup', type=int, default=2, help='untimed rounds per shape')
    parser.add_argument('--repeats', type=int, default=5, help='timed rounds per shape')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--amp', action='store_true',
                        help='autocast: bf16 on CPU, fp16 on GPU')
    parser.add_argument('--compile', action='store_true',
                        help='torch.compile the models (not in the profile)')
    parser.add_argument('--threads', type=int, help='torch.set_num_threads')
    parser.add_argument('--seed', type=int, default=0, help='weights and inputs')
    parser.add_argument('--out-dir', default='work_dirs/benchmark')
    args = parser.parse_args(argv)
    for name in ('batch_sizes', 'sizes'):
        if any(v < 1 for v in getattr(args, name)):
            parser.error(f'--{name.replace("_", "-")} must be positive')
    if args.repeats < 1:
        parser.error('--repeats must be at least 1')
    if args.detection is not None and args.config:
        parser.error('--detection builds the backbones of the detection configs: pass '
                     '--arch (or --arch-dict), not a config')
    if args.device.startswith('cuda') and not torch.cuda.is_available():
        parser.error('--device cuda asked for, but torch sees no GPU')
    return args


def run(args, runner: analysis.Runner) -> dict:
    """Every measurement the arguments ask for, by name."""
    ours = main_candidates(args)
    results = {}
    timing = dict(warmup=args.warmup, repeats=args.repeats)
    if args.batch_sizes:
        results['throughput'] = analysis.measure_throughput(
            runner, with_peers(ours, args), args.batch_sizes, args.img_size, **timing)
        print_throughput(results['throughput'])
    if args.sizes:
        candidates = analysis.scaling_candidates(ours, args.cluster_size, args.peers,
                                                 args.peer_size)
        results['scaling'] = analysis.measure_scaling(runner, candidates, args.sizes,
                                                      args.scaling_batch, **timing)
        print_scaling(results['scaling'])
    if args.profile:
        results['profile'] = analysis.measure_profile(runner, ours, args.profile,
                                                      args.img_size, op_top=args.op_table,
                                                      **timing)
        print_profile(results['profile'])
    if args.autocast_error:
        results['autocast_error'] = analysis.measure_autocast_error(
            runner, with_peers(ours, args), args.img_size)
        print_autocast_error(results['autocast_error'])
    if args.float32_overhead:
        height, width, _ = args.float32_overhead
        candidate = analysis.detection_cvig_candidate(detection_archs(args)[0],
                                                      args.backbone_options)
        row = analysis.measure_float32_overhead(runner, candidate, height, width, **timing)
        results['float32_overhead'] = row
        print(f'{row["model"]} {height}x{width} under {row["dtype"]} autocast: '
              f'{row["shipped_s"]:.3f} s with DEGC\'s float32 steps, '
              f'{row["low_precision_s"]:.3f} s without: the float32 steps cost '
              f'{100 * row["overhead_share"]:.1f}% of the forward (paired ratio '
              f'x{row["paired"]["paired_median"]:.3f})')
    if args.detection is not None:
        candidates = analysis.detection_candidates(detection_archs(args), args.detection_peers,
                                                   args.backbone_options)
        height, width, _ = args.detection_size
        results['detection'] = analysis.measure_detection_tables(
            runner, candidates, args.detection or DETECTION_MODES, height, width,
            args.detection_train_batch, **timing)
        for mode, rows in results['detection'].items():
            print_detection(mode, rows)
    return results


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    runner = analysis.Runner(args.device, args.amp, args.compile, args.seed)
    results = dict(machine=machine_info(runner, args), settings=vars(args).copy())
    results.update(run(args, runner))
    results['machine']['load_average_end'] = list(os.getloadavg())
    warn_if_oversubscribed(results['machine'], 'load_average_end')
    write_outputs(results, args.out_dir)
    return results


if __name__ == '__main__':
    main()
