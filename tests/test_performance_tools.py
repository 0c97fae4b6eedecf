"""The performance tools at tiny settings: tools/analysis_tools/benchmark.py,
tools/visualize_partitions.py and tools/deployment/export_onnx.py.

The tools run in this process (their ``main(argv)``), which saves a second import of the
OpenMMLab stack per call. Nothing here asserts a time: speed is what the benchmark
reports, these tests check that it measures and writes what it says.
"""
import csv
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mmcvig.models import ClusterViG
from mmcvig.models.degc import degc as degc_module

ROOT = Path(__file__).resolve().parents[1]
# Two blocks of 32 channels: fast, and still every DEGC step (kappa 3, K 9 and 18).
MINI = dict(num_blocks=2, channels=32, num_clusters=3, groups=2, stride=16)
MINI_JSON = json.dumps(MINI)


def load_tool(relative: str):
    """Import a script under tools/ as a module."""
    path = ROOT / relative
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def benchmark():
    return load_tool('tools/analysis_tools/benchmark.py')


@pytest.fixture(autouse=True)
def keep_threads():
    """The benchmark's --threads sets torch's global thread count: restore it."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def read_csv(path):
    with open(path, newline='') as f:
        return list(csv.DictReader(f))


def test_benchmark_mini_writes_all_outputs(benchmark, tmp_path):
    out = tmp_path / 'bench'
    results = benchmark.main([
        '--arch-dict', MINI_JSON, '--peers', '--batch-sizes', '1', '2', '--img-size', '64',
        '--sizes', '64', '128', '--cluster-size', '16', '--profile', '64', '64x96,2',
        '--op-table', '2', '--warmup', '0', '--repeats', '2', '--threads', '1',
        '--out-dir', str(out)
    ])
    files = {'benchmark.json', 'throughput.csv', 'throughput.png', 'scaling.csv',
             'scaling.png', 'profile.csv'}
    assert files <= {p.name for p in out.iterdir()}
    for png in ('throughput.png', 'scaling.png'):
        assert Image.open(out / png).size[0] > 100

    saved = json.loads((out / 'benchmark.json').read_text())
    assert saved['machine']['threads'] == 1
    rows = read_csv(out / 'throughput.csv')
    assert [(r['model'], r['batch']) for r in rows] == [('CViG-custom', '1'),
                                                        ('CViG-custom', '2')]
    for r in saved['throughput']:
        assert len(r['times_s']) == 2
        assert r['images_per_s'] == pytest.approx(r['batch'] / r['median_s'])
        assert r['q1_s'] <= r['median_s'] <= r['q3_s']

    # kappa fixed (3) for the arch, ceil(tokens / 16) for the cluster_size variant
    kappas = {(r['model'], r['tokens']): r['kappa'] for r in saved['scaling']}
    assert kappas == {('CViG-custom', 16): 3, ('CViG-custom', 64): 3,
                      ('CViG-custom cs16', 16): 1, ('CViG-custom cs16', 64): 4}
    for r in saved['scaling']:
        expected = 1.0 if r['img_size'] == 64 else r['ms_per_image'] / next(
            b['ms_per_image'] for b in saved['scaling']
            if b['model'] == r['model'] and b['img_size'] == 64)
        assert r['time_ratio'] == pytest.approx(expected)

    assert [(r['height'], r['width'], r['batch'], r['tokens'])
            for r in results['profile']] == [(64, 64, 1, 16), (64, 96, 2, 24)]
    for r in results['profile']:
        assert sum(r['share'].values()) == pytest.approx(1.0)
        # every DEGC step ran and was timed; both blocks ran k-means
        assert all(r['steps_ms'][s] > 0 for s in benchmark.DEGC_STEPS)
        assert 0 <= r['kmeans_iterations_mean'] <= 20
        assert set(r['operators']) >= set(benchmark.DEGC_STEPS)
        assert all(len(ops) <= 2 for ops in r['operators'].values())
    assert len(read_csv(out / 'profile.csv')) == 2 * 5  # 2 sizes x (4 steps + other)
    assert results['targets'] == []  # no CViG-Ti / peers measured: nothing to check


def test_profile_timers_are_removed(benchmark):
    """The step timers patch module globals and instance attributes only while they
    measure; afterwards the model is exactly as built."""
    model = ClusterViG(MINI, img_size=64).eval()
    originals = {name: getattr(degc_module, name)
                 for name in ('partition', 'build_graph', 'build_graph_sparse',
                              'cluster_means')}
    timer = benchmark.StepTimer(benchmark.Runner('cpu', amp=False, compile_model=False))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = model(x)[0]
        with timer.installed(model):
            timed = model(x)[0]
        assert timer.partition_calls == 2
        assert all(timer.seconds[s] > 0 for s in benchmark.DEGC_STEPS)
    assert torch.equal(expected, timed)
    for name, fn in originals.items():
        assert getattr(degc_module, name) is fn
    for degc in (m for m in model.modules() if isinstance(m, degc_module.DEGC)):
        assert 'forward' not in vars(degc.global_update)
        assert 'forward' not in vars(degc.local_update)
        assert 'forward_sparse' not in vars(degc.local_update)


def test_benchmark_runs_matching_peers(benchmark, tmp_path):
    """ClusterViG-Ti against Vig-Ti and PViG-Ti (192 px: the smallest input on which both
    peers' k-NN find enough tokens), with speedups and the batch-1 target evaluated."""
    results = benchmark.main([
        '--arch', 'tiny', '--batch-sizes', '1', '--img-size', '192', '--warmup', '0',
        '--repeats', '1', '--threads', '1', '--out-dir', str(tmp_path)
    ])
    rows = {r['model']: r for r in results['throughput']}
    assert set(rows) == {'CViG-Ti', 'Vig-Ti', 'PViG-Ti'}
    ours = rows['CViG-Ti']
    assert ours['speedup_vs_pvig'] == pytest.approx(rows['PViG-Ti']['median_s'] /
                                                    ours['median_s'])
    assert ours['speedup_vs_vig'] == pytest.approx(rows['Vig-Ti']['median_s'] /
                                                   ours['median_s'])
    assert 'speedup_vs_pvig' not in rows['PViG-Ti']
    assert [t['target'] for t in results['targets']] == [
        'CViG-Ti / PViG-Ti images/s at batch 1']


def test_benchmark_rejects_bad_sizes(benchmark):
    with pytest.raises(SystemExit):
        benchmark.parse_args(['--profile', '224x'])
    with pytest.raises(SystemExit):
        benchmark.parse_args(['--profile', '224,0'])
    assert benchmark.parse_args(['--profile', '224', '800x1333,2']).profile == [
        (224, 224, 1), (800, 1333, 2)]
    with pytest.raises(SystemExit):
        benchmark.parse_args(['--batch-sizes', '0'])


def test_visualiser_writes_png_of_expected_size(tmp_path):
    tool = load_tool('tools/visualize_partitions.py')
    image = tmp_path / 'input.png'
    tool.generated_image(80).save(image)
    out = tmp_path / 'partitions.png'
    tool.main(['--image', str(image), '--arch-dict', MINI_JSON, '--img-size', '64',
               '--blocks', '0', '-1', '--token', '1', '2', '--panel-size', '96', '--out',
               str(out)])
    # two panels of 96 px side by side, under the title strip
    assert Image.open(out).size == (2 * 96, 96 + tool.HEADER_PX)
    with pytest.raises(SystemExit, match='outside'):
        tool.main(['--arch-dict', MINI_JSON, '--img-size', '64', '--token', '4', '0',
                   '--out', str(out)])


def test_visualiser_capture_matches_forward(monkeypatch):
    """The captured partition is the one the forward computes, and capturing leaves the
    forward's own draws unchanged, even with random k-means initialisation."""
    tool = load_tool('tools/visualize_partitions.py')
    model = ClusterViG(MINI, img_size=64, kmeans_init='random').eval()
    x = torch.randn(1, 3, 64, 64)
    original = degc_module.partition
    forward_parts = []

    def recording(*args, **kwargs):
        forward_parts.append(original(*args, **kwargs))
        return forward_parts[-1]

    # The tool calls its own import of `partition`: only the forward's calls land here.
    monkeypatch.setattr(degc_module, 'partition', recording)
    torch.manual_seed(3)
    with torch.no_grad():
        model(x)
    plain = [p.labels for p in forward_parts]
    forward_parts.clear()
    torch.manual_seed(3)
    records = tool.capture(model, x, [1])
    assert len(forward_parts) == len(plain) == 2
    assert all(torch.equal(a, p.labels) for a, p in zip(plain, forward_parts))
    assert torch.equal(records[1]['labels'], forward_parts[1].labels[0])
    assert records[1]['k'] == model.blocks[1][0].degc.k
    nbrs, valid, labels = (records[1][key] for key in ('neighbors', 'valid', 'labels'))
    # slot 0 is the token itself; every valid neighbour lies in the token's cluster
    assert torch.equal(nbrs[:, 0], torch.arange(len(labels)))
    assert bool((labels[nbrs] == labels[:, None])[valid].all())


def test_onnx_roundtrip_matches_pytorch(tmp_path):
    tool = load_tool('tools/deployment/export_onnx.py')
    out = tmp_path / 'mini.onnx'
    result = tool.main(['--arch-dict', MINI_JSON, '--img-size', '64', '--dynamic-batch',
                        '--verify-batches', '1', '2', '--out', str(out)])
    assert out.is_file()
    assert [r['batch'] for r in result['verify']] == [1, 2]
    assert all(r['ok'] for r in result['verify']), result['verify']

    import onnxruntime as ort
    session = ort.InferenceSession(str(out), providers=['CPUExecutionProvider'])
    x = np.random.default_rng(0).standard_normal((3, 3, 64, 64)).astype(np.float32)
    (got, ) = session.run(None, {tool.INPUT_NAME: x})
    assert got.shape == (3, 32, 4, 4)  # a batch not seen at export or verification


def test_benchmark_times_the_backbone_of_a_config(benchmark, tmp_path):
    """A config path: its model.backbone is built and timed (no peers for a ResNet)."""
    config = ROOT / 'tests' / 'data' / 'configs' / 'tiny_cls.py'
    results = benchmark.main([str(config), '--batch-sizes', '2', '--img-size', '32',
                              '--warmup', '0', '--repeats', '1', '--out-dir', str(tmp_path)])
    (row, ) = results['throughput']
    assert (row['model'], row['family'], row['batch']) == ('ResNet(tiny_cls)', 'backbone', 2)
    assert (tmp_path / 'throughput.png').is_file()
