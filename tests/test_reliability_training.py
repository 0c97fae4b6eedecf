"""Training reliability on the toy detector: exact resume, 2-process CPU training."""
import os
import os.path as osp
import socket
import subprocess
import sys

import pytest
import torch
from mmengine.runner import CheckpointLoader

from mmcvig.datasets.toy_coco import ToyCocoSpec, generate

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIG = osp.join(ROOT, 'configs', 'toy', 'mask-rcnn_cvig-mini_fpn_toy.py')


@pytest.fixture(scope='module')
def toy_data(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('toy_coco'))
    generate(root, ToyCocoSpec(num_train=8, num_val=2, min_side=96, max_side=128,
                               max_objects=3))
    return root + '/'


def cfg_options(data_root, **extra):
    """A tiny, deterministic version of the toy config: no random flip (its draws are
    not what is tested), generator states saved in checkpoints, 4 iterations/epoch."""
    options = {
        'train_dataloader.batch_size': 2,
        'train_dataloader.num_workers': 0,
        'train_dataloader.persistent_workers': False,
        'train_dataloader.dataset.data_root': data_root,
        'val_dataloader.dataset.data_root': data_root,
        'val_evaluator.ann_file': data_root + 'annotations/instances_val.json',
        'train_dataloader.dataset.pipeline.3.prob': 0.0,
        'train_cfg.val_interval': 100,
        'default_hooks.checkpoint.interval': 1,
        'default_hooks.checkpoint.max_keep_ckpts': -1,
        'param_scheduler.0.end': 2,
        'randomness.deterministic': True,
    }
    options.update(extra)
    return [f'{k}={v}' for k, v in options.items()]


def run(args, **kwargs):
    result = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600,
                            **kwargs)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@pytest.fixture(scope='module')
def config(tmp_path_factory):
    """The toy config with generator states saved in (and restored from) checkpoints."""
    path = tmp_path_factory.mktemp('configs') / 'toy_rng.py'
    path.write_text(f"_base_ = {CONFIG!r}\ncustom_hooks = [dict(type='RNGStateHook')]\n")
    return str(path)


def train(config, work_dir, data_root, max_epochs, resume=False, processes=1):
    """tools/train.py, or tools/dist_train.sh with ``processes`` (gloo, one image per
    process and step: 4 iterations an epoch either way)."""
    options = cfg_options(data_root, **{'train_cfg.max_epochs': max_epochs})
    if processes == 1:
        command, env = [sys.executable, 'tools/train.py', config], None
    else:
        command = ['bash', 'tools/dist_train.sh', config, str(processes)]
        env = dict(os.environ, PORT=str(free_port()), PYTHON=sys.executable,
                   OMP_NUM_THREADS='1')
        options.append('train_dataloader.batch_size=1')
    args = [*command, '--work-dir', str(work_dir), '--cfg-options', *options]
    if resume:
        args.append('--resume')
    return run(args, env=env)


def weights(path):
    return CheckpointLoader.load_checkpoint(str(path), map_location='cpu')['state_dict']


@pytest.mark.slow
@pytest.mark.parametrize('processes', [1, 2])
def test_resume_equals_uninterrupted_training(tmp_path, toy_data, config, processes):
    """With 2 processes every one draws its own samples (RPN and RoI samplers): each
    must get its own generator states back, not those of the process that saved."""
    straight, split = tmp_path / 'straight', tmp_path / 'split'
    train(config, straight, toy_data, max_epochs=2, processes=processes)
    train(config, split, toy_data, max_epochs=1, processes=processes)
    log = train(config, split, toy_data, max_epochs=2, resume=True, processes=processes)
    assert 'resumed' in (log.stdout + log.stderr).lower()

    expected, resumed = weights(straight / 'epoch_2.pth'), weights(split / 'epoch_2.pth')
    after_one = weights(split / 'epoch_1.pth')
    assert expected.keys() == resumed.keys()
    for key, value in expected.items():
        torch.testing.assert_close(resumed[key], value, rtol=1e-5, atol=1e-6, msg=key)
    # The second epoch really trained: the weights moved after the resume.
    moved = [k for k, v in after_one.items() if v.is_floating_point() and
             not torch.equal(v, resumed[k])]
    assert moved


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_process_cpu_training_saves_a_checkpoint(tmp_path, toy_data):
    env = dict(os.environ, PORT=str(free_port()), PYTHON=sys.executable, OMP_NUM_THREADS='1')
    args = ['bash', 'tools/dist_train.sh', CONFIG, '2', '--work-dir', str(tmp_path),
            '--cfg-options', *cfg_options(toy_data, **{'train_cfg.max_epochs': 1,
                                                       'train_dataloader.batch_size': 1})]
    log = run(args, env=env)
    output = log.stdout + log.stderr
    assert 'CPUDistributedDataParallel' in output or 'gloo' in output
    ckpt = torch.load(tmp_path / 'epoch_1.pth', map_location='cpu')
    assert ckpt['meta']['epoch'] == 1
    # 8 images, 1 per process per step, 2 processes: 4 iterations.
    assert ckpt['meta']['iter'] == 4
