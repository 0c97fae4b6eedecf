"""mmcvig.analysis at tiny settings: timing, DEGC profile, detection-scale cost, peak
memory and partition records.

Nothing here asserts a time: speed is what the benchmarks report; these tests check
that they measure what they say, from what the model itself reports.
"""
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from mmcvig import analysis
from mmcvig.analysis import DEGC_STEPS, OTHER, Runner, profiling
from mmcvig.models import ClusterViG

ROOT = Path(__file__).resolve().parents[1]
# Two blocks of 32 channels: fast, and still every DEGC step (kappa 3, K 9 and 18).
MINI = dict(num_blocks=2, channels=32, num_clusters=3, groups=2, stride=16)


@pytest.fixture
def runner():
    return Runner('cpu', amp=False, compile_model=False, seed=0)


def test_summarize_gives_median_and_quartiles():
    stats = analysis.summarize([3.0, 1.0, 2.0, 4.0])
    assert (stats['median_s'], stats['q1_s'], stats['q3_s']) == (2.5, 1.75, 3.25)
    assert (stats['min_s'], stats['max_s'], stats['repeats']) == (1.0, 4.0, 4)
    ratio = analysis.paired_ratio([2.0, 4.0, 6.0], [1.0, 1.0, 2.0])
    assert ratio['ratio_of_medians'] == 4.0
    assert ratio['paired_median'] == 3.0


def test_round_robin_rotates_and_times_every_job(runner):
    calls = []
    jobs = {name: (lambda n=name: calls.append(n)) for name in 'abc'}
    times = analysis.round_robin(runner, jobs, warmup=1, repeats=3)
    assert calls == list('abc' 'abc' 'bca' 'cab')  # warm-up round, then rotated rounds
    assert {k: len(v) for k, v in times.items()} == dict(a=3, b=3, c=3)
    assert all(t >= 0 for v in times.values() for t in v)


def test_profile_reads_the_degc_ranges_and_intermediates(runner):
    model = ClusterViG(MINI, img_size=64).eval()
    x = runner.inputs(2, 64, 96)
    row = analysis.profile_degc(runner, model, x, repeats=2, op_top=3, name='mini')
    assert (row['batch'], row['height'], row['width']) == (2, 64, 96)
    assert (row['tokens'], row['kappa']) == (24, 3)
    # every DEGC step showed up in the profiler by its range name
    assert all(row['steps_ms'][s] > 0 for s in DEGC_STEPS)
    assert row['steps_ms'][OTHER] > 0
    assert sum(row['share'].values()) == pytest.approx(1.0)
    assert sum(row['isolated_share'].values()) == pytest.approx(1.0)
    assert all(row['isolated_ms'][s] > 0 for s in DEGC_STEPS)
    assert row['total_ms'] > 0 and row['profiled_ms'] > 0
    assert set(row['operators']) >= set(DEGC_STEPS)
    assert all(0 < len(ops) <= 3 for ops in row['operators'].values())
    assert any('topk' in op for op in row['operators']['build_graph'])
    # k-means iterations are the ones the forward reports, per block
    with torch.no_grad():
        _, intermediates = model(x, return_intermediates=True)
    expected = [int(rec.partition.iters) for rec in intermediates]
    assert row['kmeans_iterations'] == expected
    assert len(expected) == 2 and all(1 <= i <= 20 for i in expected)
    assert row['kmeans_iterations_mean'] == pytest.approx(np.mean(expected))
    # the k-NN's least arithmetic: every token against its own cluster, C = 32
    sizes = torch.stack([rec.partition.counts for rec in intermediates]).double()
    assert row['knn_gmacs'] == pytest.approx(float(sizes.square().sum()) * 32 / 1e9)
    assert row['knn_floor_ms'] is None  # no device rate given


def test_measure_profile_gives_the_knn_floor(runner):
    candidate = analysis.cvig_candidate(MINI)
    row, = analysis.measure_profile(runner, [candidate], [(64, 64, 1)], img_size=64,
                                    warmup=0, repeats=1)
    rate = 1e9 * row['knn_gmacs'] / (row['knn_floor_ms'] / 1e3)  # MACs per second
    assert 1e8 < rate < 1e15  # a matrix product's rate, measured
    assert row['knn_floor_share'] == pytest.approx(row['knn_floor_ms'] / row['total_ms'])


def test_isolated_steps_rerun_what_the_forward_ran(runner):
    """The steps timed one by one get each block's own input and the results of the
    steps before it: they compute what the forward computed."""
    model = ClusterViG(MINI, img_size=64).eval()
    x = runner.inputs(2, 64, 96)
    states = profiling._block_states(runner, profiling._degc_calls(runner, model, x))
    with torch.no_grad():
        out, intermediates = model(x, return_intermediates=True)
    assert len(states) == len(intermediates) == 2
    for state, record in zip(states, intermediates):
        assert torch.equal(state.part.labels, record.partition.labels)
        assert torch.equal(state.graph.neighbors, record.graph.neighbors)
        torch.testing.assert_close(state.centroids.values, record.centroids)
    with torch.no_grad():
        last = states[-1]
        block_out = last.degc.step_local_update(last.x, last.tokens, last.graph,
                                                last.centroids)
        torch.testing.assert_close(block_out, last.degc(last.x))
    times = analysis.isolated_step_times(runner, model, x, repeats=2)
    assert set(times) == {*DEGC_STEPS, OTHER}
    assert all(times[s] > 0 for s in DEGC_STEPS)


def test_measure_profile_skips_models_without_degc(runner):
    candidates = [analysis.cvig_candidate(MINI), analysis.peer_candidates('tiny')[0]]
    rows = analysis.measure_profile(runner, candidates, [(64, 64, 1)], img_size=64,
                                    warmup=0, repeats=1)
    assert [(r['model'], r['tokens']) for r in rows] == [('CViG-custom', 16)]


def test_throughput_against_matching_peers(runner):
    """CViG-Ti beside Vig-Ti and PViG-Ti (192 px: the smallest input on which both peers'
    k-NN find enough tokens), speedups as ratios of the medians."""
    candidates = analysis.with_peers([analysis.cvig_candidate('tiny')], analysis.PEERS)
    rows = analysis.measure_throughput(runner, candidates, [1], img_size=192, warmup=0,
                                       repeats=1)
    by_name = {r['model']: r for r in rows}
    assert set(by_name) == {'CViG-Ti', 'Vig-Ti', 'PViG-Ti'}
    ours = by_name['CViG-Ti']
    assert ours['images_per_s'] == pytest.approx(1 / ours['median_s'])
    for peer, family in (('PViG-Ti', 'pvig'), ('Vig-Ti', 'vig')):
        expected = by_name[peer]['median_s'] / ours['median_s']
        assert ours[f'speedup_vs_{family}'] == pytest.approx(expected)
    assert 'speedup_vs_pvig' not in by_name['PViG-Ti']


def test_scaling_kappa_and_ratios(runner):
    candidates = analysis.scaling_candidates([analysis.cvig_candidate(MINI)], 16, peers=())
    rows = analysis.measure_scaling(runner, candidates, [64, 128], warmup=0, repeats=2)
    kappas = {(r['model'], r['tokens']): r['kappa'] for r in rows}
    assert kappas == {('CViG-custom', 16): 3, ('CViG-custom', 64): 3,
                      ('CViG-custom cs16', 16): 1, ('CViG-custom cs16', 64): 4}
    base = {r['model']: r['ms_per_image'] for r in rows if r['img_size'] == 64}
    for r in rows:
        assert r['time_ratio'] == pytest.approx(r['ms_per_image'] / base[r['model']])


def test_config_candidate_builds_the_backbone(runner):
    candidate = analysis.config_candidate(str(ROOT / 'tests/data/configs/tiny_cls.py'))
    (row, ) = analysis.measure_throughput(runner, [candidate], [2], img_size=32, warmup=0,
                                          repeats=1)
    assert (row['model'], row['family'], row['batch']) == ('ResNet(tiny_cls)', 'backbone', 2)


def test_detection_candidates_follow_the_configs():
    candidates = analysis.detection_candidates(['tiny', 'small'])
    assert [c.name for c in candidates] == ['CViG-Ti', 'CViG-S', 'ResNet-50', 'Swin-T',
                                            'PVTv2-b2']
    types = [c.info['backbone']['type'] for c in candidates]
    assert types == ['ClusterViG', 'ClusterViG', 'ResNet', 'SwinTransformer',
                     'PyramidVisionTransformerV2']
    assert all('init_cfg' not in c.info['backbone'] for c in candidates)
    tiny = candidates[0].make(224)
    assert isinstance(tiny, ClusterViG) and tiny.arch['channels'] == 192
    assert tiny.pyramid is not None  # the detection configs' pyramid backbone


@pytest.mark.parametrize('train', [True, False])
def test_detection_cost_on_small_inputs(runner, train):
    """The detection tables' measurement on 2x3x64x96: a mini pyramid ClusterViG (as the
    CViG-S config builds it, with the mini arch) beside mmdet's ResNet-50."""
    candidates = analysis.detection_candidates([MINI], ['ResNet-50'])
    rows = analysis.measure_detection(runner, candidates, 2, 64, 96, train=train, warmup=0,
                                      repeats=2)
    assert [r['model'] for r in rows] == ['CViG-custom', 'ResNet-50']
    for r in rows:
        assert r['mode'] == ('train' if train else 'inference')
        assert len(r['times_s']) == 2 and r['q1_s'] <= r['median_s'] <= r['q3_s']
        assert r['reference'] == 'CViG-custom'  # no CViG-S here: the first model
        assert r['step_peak_mb'] > 0
        assert r['peak_mb'] > r['state_mb'] > 0
    assert rows[0]['relative'] == 1.0 and rows[0]['memory_relative'] == 1.0
    assert rows[1]['relative'] == pytest.approx(rows[1]['median_s'] / rows[0]['median_s'])


def test_cpu_peak_memory_counts_live_tensors(runner):
    mib = 2**20

    def job():
        a = torch.ones(mib // 4)  # 1 MiB of float32
        b = torch.ones(mib // 2)  # 2 MiB, while a is alive
        del a, b
        c = torch.ones(mib // 4)  # 1 MiB again, after both were freed
        return c

    peak = analysis.peak_memory(runner, job)
    assert 3 * mib <= peak < 3.5 * mib


def test_allocation_peak_follows_event_order():
    def record(t, nbytes, device='CPU', name='[memory]'):
        return SimpleNamespace(name=lambda: name, nbytes=lambda: nbytes,
                               start_ns=lambda: t,
                               device_type=lambda: SimpleNamespace(name=device))

    events = [record(3, -5), record(1, 5), record(2, 7), record(4, 4),
              record(0, 100, device='CUDA'), record(5, 100, name='aten::add')]
    assert analysis.allocation_peak(events) == 12  # 5 + 7 before the free of 5


def test_partition_records_are_the_forwards():
    """Records of the visualiser come from the forward's own intermediates, even with a
    random k-means initialisation."""
    model = ClusterViG(MINI, img_size=64, kmeans_init='random').eval()
    x = torch.randn(1, 3, 64, 96)
    torch.manual_seed(3)
    with torch.no_grad():
        _, intermediates = model(x, return_intermediates=True)
    torch.manual_seed(3)
    records = analysis.partition_records(model, x, [0, 1])
    for block, rec in records.items():
        assert rec['grid'] == (4, 6)
        assert torch.equal(rec['labels'], intermediates[block].partition.labels[0])
        assert torch.equal(rec['neighbors'], intermediates[block].graph.neighbors[0])
        assert rec['k'] == model.blocks[block][0].degc.k
        nbrs, valid, labels = rec['neighbors'], rec['valid'], rec['labels']
        # slot 0 is the token itself; every valid neighbour lies in the token's cluster
        assert torch.equal(nbrs[:, 0], torch.arange(len(labels)))
        assert bool((labels[nbrs] == labels[:, None])[valid].all())


def test_autocast_error_as_built_and_calibrated(runner):
    candidates = analysis.with_peers([analysis.cvig_candidate(MINI)], ['pvig'], 'tiny')
    rows = analysis.measure_autocast_error(runner, candidates, img_size=224)
    assert [(r['model'], r['bn']) for r in rows] == [
        (name, bn) for name in ('CViG-custom', 'PViG-Ti') for bn in ('as built', 'calibrated')]
    for r in rows:
        assert r['float32_max'] > 0
        assert all(0 <= r[f'error_{d}'] < 10 or np.isnan(r[f'error_{d}'])
                   for d in ('float16', 'bfloat16'))
        assert r['error_bfloat16'] > 0  # autocast did change something


def test_calibrated_norms_hold_the_batch_statistics():
    torch.manual_seed(0)
    model = ClusterViG(MINI).eval()
    x = torch.randn(2, 3, 64, 64)
    stem_bn = model.stem[0].bn
    analysis.calibrate_norms(model, x)
    assert not model.training
    with torch.no_grad():
        first = model.stem[0].conv(x)
    torch.testing.assert_close(stem_bn.running_mean, first.mean((0, 2, 3)))
    torch.testing.assert_close(stem_bn.running_var, first.var((0, 2, 3)))


def test_autocast_reaches_degc_lets_autocast_into_the_float32_steps():
    """The comparison of the float32 overhead is against a forward in which autocast
    really reaches k-means and the k-NN: their matmuls then run in bfloat16."""
    from mmcvig.models.degc import partition
    tokens = 100 + torch.randn(1, 64, 8, generator=torch.Generator().manual_seed(0))
    with torch.autocast('cpu', dtype=torch.bfloat16):
        exact = partition(tokens, 4).labels
        with analysis.autocast_reaches_degc():
            rounded = partition(tokens, 4).labels
        assert torch.equal(partition(tokens, 4).labels, exact)  # restored on exit
    assert not torch.equal(rounded, exact)


def test_float32_overhead_times_both_forwards(runner):
    row = analysis.measure_float32_overhead(runner, analysis.detection_cvig_candidate(MINI),
                                            64, 96, warmup=0, repeats=2)
    assert row['dtype'] == 'bfloat16' and row['shipped_s'] > 0 and row['low_precision_s'] > 0
    assert row['overhead_share'] == pytest.approx(1 - row['low_precision_s'] / row['shipped_s'])
