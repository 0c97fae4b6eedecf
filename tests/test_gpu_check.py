"""tools/gpu_check.py: its CPU dry run end to end, in a subprocess as ``make gpu-check``
runs it on a GPU machine (every section present in the JSON and the markdown), and the
pieces that decide what the outputs say: a failing section is recorded while the others
run, no time left skips a section, pytest's JUnit report is counted."""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / 'tools' / 'gpu_check.py'


@pytest.fixture(scope='module')
def gpu_check():
    """tools/gpu_check.py as a module (tools/ is not a package)."""
    spec = importlib.util.spec_from_file_location('gpu_check', TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp('gpu_check')
    env = dict(os.environ, OMP_NUM_THREADS='1')
    proc = subprocess.run([sys.executable, str(TOOL), '--dry-run', '--out-dir', str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((out / 'gpu_check.json').read_text()), (out / 'gpu_check.md').read_text()


def test_dry_run_json_has_every_section(dry_run):
    results, _ = dry_run
    assert results['ok'] and results['settings']['dry_run']
    machine = results['machine']
    assert machine['device'] == 'cpu' and machine['torch'] and 'gpu' in machine
    assert machine['mmcv_ops'] and machine['packages']['mmdet']
    sections = results['sections']
    assert list(sections) == ['tests', 'throughput', 'detection']

    tests = sections['tests']  # CUDA hidden: collected, all skipped
    assert tests['status'] == 'passed'
    assert tests['counts']['tests'] == tests['counts']['skipped'] > 0
    assert any('test_cuda.py' in case['name'] or 'test_cuda' in case['name']
               for case in tests['cases'])

    throughput = sections['throughput']
    assert throughput['status'] == 'ok' and not throughput['skipped']
    cells = {(r['model'], r['batch']) for r in throughput['rows']}
    models = ('CViG-Ti', 'Vig-Ti', 'PViG-Ti', 'CViG-S', 'Vig-S', 'PViG-S')
    assert cells == {(m, b) for m in models for b in (1, 2)}
    assert all(r['images_per_s'] > 0 for r in throughput['rows'])
    assert all('speedup_vs_vig' in r and 'speedup_vs_pvig' in r for r in throughput['rows']
               if r['family'] == 'cvig')

    detection = sections['detection']
    assert detection['status'] == 'ok' and not detection['skipped']
    assert list(detection['tables']) == ['inference', 'train-amp', 'inference-amp']
    for mode, rows in detection['tables'].items():
        assert [r['model'] for r in rows] == ['CViG-Ti', 'CViG-S', 'ResNet-50', 'Swin-T']
        assert all(r['peak_mb'] > 0 and r['median_s'] > 0 for r in rows), mode
    assert detection['modes']['train-amp']['grad_scaler']
    assert detection['modes']['train-amp']['batch'] == 2
    assert detection['modes']['inference']['autocast'] == 'float32'


def test_dry_run_markdown_has_every_section(dry_run):
    results, text = dry_run
    assert text.startswith('# GPU check')
    assert f'torch {results["machine"]["torch"]}' in text
    for heading in ('## CUDA tests', '## Throughput (paper Table VI)', '## Detection scale',
                    '### inference:', '### train-amp:', '### inference-amp:'):
        assert heading in text
    assert '| batch | CViG-Ti | Vig-Ti | PViG-Ti |' in text
    assert '| Swin-T |' in text and 'GradScaler' in text


def fake_section(status):
    def run(args, seconds):
        if status == 'raise':
            raise ValueError('broken on purpose')
        return dict(status=status)

    return run


def test_failing_section_is_recorded_and_the_others_run(gpu_check, monkeypatch, tmp_path):
    monkeypatch.setattr(gpu_check, 'SECTION_FUNCS', dict(
        tests=fake_section('raise'), throughput=fake_section('ok'),
        detection=fake_section('ok')))
    assert gpu_check.main(['--device', 'cpu', '--out-dir', str(tmp_path)]) == 1
    results = json.loads((tmp_path / 'gpu_check.json').read_text())
    sections = results['sections']
    assert sections['tests']['status'] == 'error'
    assert 'ValueError: broken on purpose' in sections['tests']['error']
    assert sections['throughput']['status'] == sections['detection']['status'] == 'ok'
    assert not results['ok']
    assert 'Error: `ValueError: broken on purpose`' in (tmp_path / 'gpu_check.md').read_text()


def test_no_time_left_skips_the_sections(gpu_check, tmp_path):
    assert gpu_check.main(['--device', 'cpu', '--budget-s', '0', '--sections', 'throughput',
                           '--out-dir', str(tmp_path)]) == 1
    sections = json.loads((tmp_path / 'gpu_check.json').read_text())['sections']
    assert sections['throughput']['status'] == 'skipped'
    assert sections['tests']['status'] == sections['detection']['status'] == 'not selected'


def test_junit_counts(gpu_check, tmp_path):
    report = tmp_path / 'junit.xml'
    report.write_text(
        '<testsuites><testsuite tests="4" failures="1" errors="0" skipped="1">'
        '<testcase classname="tests.test_cuda" name="test_a" time="0.5"/>'
        '<testcase classname="tests.test_cuda" name="test_b" time="0.1">'
        '<failure message="assert 1 == 2">trace</failure></testcase>'
        '<testcase classname="tests.test_cuda" name="test_c" time="0">'
        '<skipped message="needs a GPU"/></testcase>'
        '<testcase classname="tests.test_sync_free" name="test_cuda_d" time="1"/>'
        '</testsuite></testsuites>')
    result = gpu_check.junit_counts(str(report))
    assert result['counts'] == dict(tests=4, failures=1, errors=0, skipped=1, passed=2)
    outcomes = {c['name']: c['outcome'] for c in result['cases']}
    assert outcomes == {'tests.test_cuda::test_a': 'passed', 'tests.test_cuda::test_b': 'failed',
                        'tests.test_cuda::test_c': 'skipped',
                        'tests.test_sync_free::test_cuda_d': 'passed'}
