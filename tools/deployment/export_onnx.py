"""Export a ClusterViG backbone to ONNX and check it against PyTorch with onnxruntime.

The exported graph is the dense DEGC path with a fixed number of k-means iterations
(``kmeans_tol=None``): ONNX graphs have static control flow. While exporting, DEGC takes
its static-shape path by itself (``mmcvig.models.degc.execution``): the masked k-NN (no
per-cluster blocks, no host read) and neighbour aggregation by gather + reduce, as ONNX
has no ``embedding_bag``; every operator then has a standard ONNX translation. Token-grid
sizes are baked in at export (the positional embedding's size), so the height and width
of the input are fixed; the batch can be dynamic (``--dynamic-batch``). Batch padding
(``pad_aware``) is not part of the export.

Exporter: torch's TorchScript-based ``torch.onnx.export(..., dynamo=False)``; the dynamo
exporter needs the ``onnxscript`` package, which the project does not install.

Examples:
  python tools/deployment/export_onnx.py --arch tiny --out work_dirs/cvig-ti.onnx
  python tools/deployment/export_onnx.py --arch small --checkpoint cvig-s.pth \\
      --shape 512 512 --dynamic-batch --verify-batches 1 2
"""
import argparse
import json
import os
import os.path as osp
import sys
import warnings

# Run from a checkout without installing or setting PYTHONPATH.
sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn.modules.batchnorm import _BatchNorm  # noqa: E402

import mmcvig  # noqa: E402,F401  (checkpoint allow-list: mmcvig.compat)
from mmcvig.models import ClusterViG  # noqa: E402

INPUT_NAME = 'images'


def build_model(args) -> ClusterViG:
    arch = json.loads(args.arch_dict) if args.arch_dict else args.arch
    model = ClusterViG(arch, img_size=args.img_size, graph_impl='dense', kmeans_tol=None,
                       kmeans_iters=args.kmeans_iters, out_indices=args.out_indices)
    if args.checkpoint:
        from mmengine.runner import load_checkpoint

        # mmengine's loader unpickles with torch's weights_only allow-list (see
        # mmcvig/compat.py): a checkpoint file is untrusted input.
        load_checkpoint(model, args.checkpoint, map_location='cpu', strict=False,
                        revise_keys=[(r'^module\.', ''), (r'^backbone\.', '')])
    else:
        calibrate_batch_norm(model, args.img_size)
    model.eval()
    return model


@torch.no_grad()
def calibrate_batch_norm(model: nn.Module, img_size: int, batches: int = 4, seed: int = 0):
    """Give a randomly initialised model BN statistics of its own activations.

    With the initial statistics (mean 0, variance 1) every BN is the identity and the
    residual stream grows about 6x per block (CViG-Ti: outputs ~3e8 after 12 blocks), so
    float32 rounding differences between runtimes (~1e-7 relative) move k-means ties and
    the comparison says nothing. Trained weights keep activations O(1); these statistics
    do the same for a random model, so the check exercises the graph, not the rounding.
    """
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the calibration batches
    model.train()
    gen = torch.Generator().manual_seed(seed)
    for _ in range(batches):
        model(torch.randn(2, 3, img_size, img_size, generator=gen))
    model.eval()


def output_names(model: ClusterViG):
    return [f'block{i}' for i in model.out_indices]


def export(model: ClusterViG, path: str, shape, batch: int, dynamic_batch: bool, opset: int):
    x = torch.randn(batch, 3, *shape)
    names = output_names(model)
    dynamic_axes = None
    if dynamic_batch:
        dynamic_axes = {name: {0: 'batch'} for name in [INPUT_NAME, *names]}
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    with warnings.catch_warnings():
        # The TorchScript exporter warns about every Python int it bakes in (shapes):
        # expected here, the docstring says which sizes are fixed.
        warnings.simplefilter('ignore', torch.jit.TracerWarning)
        # The exporter choice is explained in the module docstring.
        warnings.filterwarnings('ignore', 'You are using the legacy TorchScript-based',
                                DeprecationWarning)
        torch.onnx.export(model, (x, ), path, dynamo=False, opset_version=opset,
                          input_names=[INPUT_NAME], output_names=names,
                          dynamic_axes=dynamic_axes)
    import onnx
    onnx.checker.check_model(onnx.load(path))


def verify(model: ClusterViG, path: str, shape, batches, atol: float, rtol: float,
           tries: int = 3, seed: int = 0) -> list:
    """Compare onnxruntime's outputs with PyTorch's on random images of every batch."""
    import onnxruntime as ort
    session = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    gen = torch.Generator().manual_seed(seed)
    return [verify_batch(model, session, batch, shape, gen, atol, rtol, tries)
            for batch in batches]


def verify_batch(model, session, batch: int, shape, gen, atol: float, rtol: float,
                 tries: int) -> dict:
    """One batch; an input at a tie (see :func:`at_tie`) says nothing about the export,
    so another is drawn, up to ``tries`` inputs."""
    ties = 0
    for _ in range(tries):
        x = torch.randn(batch, 3, *shape, generator=gen)
        expected = torch_outputs(model, x)
        try:
            got = session.run(None, {INPUT_NAME: x.numpy()})
        except Exception as err:  # onnxruntime raises its own exception types
            return dict(batch=batch, ok=False, error=str(err).splitlines()[0])
        report = compare(batch, expected, got, atol, rtol)
        if report['ok'] or not at_tie(model, x, expected, atol, rtol):
            return dict(report, ties_skipped=ties)
        ties += 1
    return dict(report, ties_skipped=ties, inconclusive=True)


def torch_outputs(model: ClusterViG, x: torch.Tensor) -> list:
    with torch.no_grad():
        return [t.numpy() for t in model(x)]


def at_tie(model: ClusterViG, x: torch.Tensor, expected, atol: float, rtol: float) -> bool:
    """True when PyTorch's own output leaves the tolerance if every input value moves by
    one float32 ulp. k-means (argmin) and k-NN (top-k) are discontinuous: at a near tie,
    the last-bit rounding differences between two runtimes flip an assignment or a
    neighbour and the outputs part (seen with CViG-Ti for about 1 random image in 12).
    """
    nudged = torch.nextafter(x, torch.full_like(x, float('inf')))
    return not compare(0, expected, torch_outputs(model, nudged), atol, rtol)['ok']


def compare(batch: int, expected, got, atol: float, rtol: float) -> dict:
    diff = max(float(np.abs(e - g).max()) for e, g in zip(expected, got))
    scale = max(float(np.abs(e).max()) for e in expected)
    close = [np.isclose(g, e, atol=atol, rtol=rtol) for e, g in zip(expected, got)]
    fraction = float(sum(c.sum() for c in close) / sum(c.size for c in close))
    return dict(batch=batch, ok=fraction == 1.0, max_abs_diff=diff, max_abs_value=scale,
                relative_error=diff / max(scale, 1e-12), fraction_close=fraction)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Export a ClusterViG backbone to ONNX and verify it with onnxruntime',
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('--arch', default='tiny', choices=sorted(ClusterViG.arch_settings))
    parser.add_argument('--arch-dict', help='a custom arch as JSON (overrides --arch)')
    parser.add_argument('--checkpoint', help='weights (backbone or classifier checkpoint); '
                        'without, random weights with BN statistics calibrated on random '
                        'images (see calibrate_batch_norm)')
    parser.add_argument('--img-size', type=int, default=224,
                        help='size the positional embedding is built for')
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'),
                        help='export input size (default: img-size square)')
    parser.add_argument('--batch', type=int, default=1, help='export batch')
    parser.add_argument('--dynamic-batch', action='store_true', help='batch axis dynamic')
    parser.add_argument('--out-indices', type=int, nargs='+', default=[-1])
    parser.add_argument('--kmeans-iters', type=int, default=20,
                        help='k-means iterations, all run (fixed control flow)')
    parser.add_argument('--opset', type=int, default=17)
    parser.add_argument('--out', default='work_dirs/cvig.onnx')
    parser.add_argument('--verify-batches', type=int, nargs='*',
                        help='batches to check with onnxruntime (default: the export '
                        'batch, and also batch+1 with --dynamic-batch; none: skip)')
    parser.add_argument('--tries', type=int, default=3,
                        help='inputs to draw per batch when one lies at a tie')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--atol', type=float, default=1e-4)
    parser.add_argument('--rtol', type=float, default=1e-3)
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    shape = tuple(args.shape or (args.img_size, args.img_size))
    torch.manual_seed(args.seed)  # random weights (without --checkpoint) and BN calibration
    model = build_model(args)
    export(model, args.out, shape, args.batch, args.dynamic_batch, args.opset)
    print(f'exported {args.out} ({osp.getsize(args.out) / 2**20:.1f} MiB), input '
          f'{"B" if args.dynamic_batch else args.batch}x3x{shape[0]}x{shape[1]}')
    batches = args.verify_batches
    if batches is None:
        batches = [args.batch] + ([args.batch + 1] if args.dynamic_batch else [])
    reports = verify(model, args.out, shape, batches, args.atol, args.rtol, args.tries,
                     args.seed)
    for r in reports:
        if 'error' in r:
            print(f'batch {r["batch"]}: onnxruntime failed: {r["error"]}')
            continue
        verdict = 'OK' if r['ok'] else 'INCONCLUSIVE' if r.get('inconclusive') else 'MISMATCH'
        print(f'batch {r["batch"]}: {verdict} max |diff| {r["max_abs_diff"]:.3g} (outputs up '
              f'to {r["max_abs_value"]:.3g}), {100 * r["fraction_close"]:.3f}% within atol '
              f'{args.atol} rtol {args.rtol}; {r["ties_skipped"]} input(s) at a k-means/k-NN '
              'tie skipped')
    if not all(r['ok'] for r in reports):
        raise SystemExit('onnxruntime outputs differ from PyTorch (see above)')
    return dict(path=args.out, shape=shape, verify=reports)


if __name__ == '__main__':
    main()
