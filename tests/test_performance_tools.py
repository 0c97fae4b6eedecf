"""The performance tools end to end, in subprocesses at tiny settings:
tools/analysis_tools/benchmark.py, tools/visualize_partitions.py and
tools/deployment/export_onnx.py.

What they measure is tested as a module in tests/test_analysis.py; here, that the
command lines run and write what they say. Nothing asserts a time.
"""
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mmcvig.models import ClusterViG

ROOT = Path(__file__).resolve().parents[1]
# Two blocks of 32 channels: fast, and still every DEGC step (kappa 3, K 9 and 18).
MINI = dict(num_blocks=2, channels=32, num_clusters=3, groups=2, stride=16)
MINI_JSON = json.dumps(MINI)
DEGC_STEPS = ('partition', 'build_graph', 'global_update', 'local_update')


def run_tool(relative: str, *args, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS='1')
    proc = subprocess.run([sys.executable, str(ROOT / relative), *map(str, args)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=600)
    if check:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def read_csv(path):
    with open(path, newline='') as f:
        return list(csv.DictReader(f))


def test_benchmark_cli_writes_every_table(tmp_path):
    out = tmp_path / 'bench'
    run_tool('tools/analysis_tools/benchmark.py', '--arch-dict', MINI_JSON, '--peers',
             '--batch-sizes', '1', '2', '--img-size', '64', '--sizes', '64', '128',
             '--cluster-size', '16', '--profile', '64', '64x96,2', '--op-table', '2',
             '--detection', '--detection-peers', 'ResNet-50', '--detection-size', '64x96',
             '--float32-overhead', '64x96',
             '--warmup', '0', '--repeats', '2', '--threads', '1', '--out-dir', out)
    files = {'benchmark.json', 'throughput.csv', 'throughput.png', 'scaling.csv',
             'scaling.png', 'profile.csv', 'detection_inference.csv', 'detection_train.csv'}
    assert files <= {p.name for p in out.iterdir()}
    for png in ('throughput.png', 'scaling.png'):
        assert Image.open(out / png).size[0] > 100

    saved = json.loads((out / 'benchmark.json').read_text())
    assert saved['machine']['threads'] == 1
    assert 'targets' not in saved  # targets live in the README, not in the tool
    assert saved['float32_overhead']['dtype'] == 'bfloat16'
    assert [(r['model'], r['batch']) for r in read_csv(out / 'throughput.csv')] == [
        ('CViG-custom', '1'), ('CViG-custom', '2')]
    assert {(r['model'], r['tokens']) for r in saved['scaling']} == {
        ('CViG-custom', 16), ('CViG-custom', 64), ('CViG-custom cs16', 16),
        ('CViG-custom cs16', 64)}
    assert [(r['height'], r['width'], r['batch']) for r in saved['profile']] == [
        (64, 64, 1), (64, 96, 2)]
    for r in saved['profile']:
        assert all(r['steps_ms'][s] > 0 for s in DEGC_STEPS)
        assert len(r['kmeans_iterations']) == 2
    assert len(read_csv(out / 'profile.csv')) == 2 * 5  # 2 inputs x (4 steps + other)
    for mode, batch in (('inference', 1), ('train', 2)):
        rows = read_csv(out / f'detection_{mode}.csv')
        assert [(r['model'], r['batch'], r['height'], r['width']) for r in rows] == [
            ('CViG-custom', str(batch), '64', '96'), ('ResNet-50', str(batch), '64', '96')]
        assert all(float(r['peak_mb']) > 0 for r in rows)


def test_benchmark_rejects_bad_sizes():
    proc = run_tool('tools/analysis_tools/benchmark.py', '--profile', '224x', check=False)
    assert proc.returncode == 2 and 'HxW' in proc.stderr


def test_visualiser_draws_the_forwards_partitions(tmp_path):
    image, out, dump = tmp_path / 'input.png', tmp_path / 'parts.png', tmp_path / 'parts.npz'
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (80, 80, 3), np.uint8)).save(
        image)
    run_tool('tools/visualize_partitions.py', '--image', image, '--arch-dict', MINI_JSON,
             '--img-size', '64', '--blocks', '0', '-1', '--token', '1', '2', '--panel-size',
             '96', '--seed', '5', '--dump', dump, '--out', out)
    width, height = Image.open(out).size
    assert width == 2 * 96 and height > 96  # two panels side by side, under a title
    saved = np.load(dump)
    torch.manual_seed(5)  # the tool's random weights
    model = ClusterViG(MINI, img_size=64).eval()
    with torch.no_grad():
        _, intermediates = model(torch.from_numpy(saved['input']), return_intermediates=True)
    for block in (0, 1):
        assert np.array_equal(saved[f'block{block}_labels'],
                              intermediates[block].partition.labels[0].numpy())
        assert np.array_equal(saved[f'block{block}_neighbors'],
                              intermediates[block].graph.neighbors[0].numpy())
    proc = run_tool('tools/visualize_partitions.py', '--arch-dict', MINI_JSON, '--img-size',
                    '64', '--token', '4', '0', '--out', out, check=False)
    assert proc.returncode != 0 and 'outside' in proc.stderr


def test_onnx_roundtrip_matches_pytorch(tmp_path):
    out = tmp_path / 'mini.onnx'
    run_tool('tools/deployment/export_onnx.py', '--arch-dict', MINI_JSON, '--img-size', '64',
             '--dynamic-batch', '--verify-batches', '1', '2', '--out', out)
    assert out.is_file()

    ort = pytest.importorskip('onnxruntime')
    session = ort.InferenceSession(str(out), providers=['CPUExecutionProvider'])
    x = np.random.default_rng(0).standard_normal((3, 3, 64, 64)).astype(np.float32)
    (got, ) = session.run(None, {'images': x})
    assert got.shape == (3, 32, 4, 4)  # a batch not seen at export or verification
