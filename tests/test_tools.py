"""tools/train.py and tools/test.py end to end: subprocesses, as a user runs them, on a
tiny mmpretrain classifier and a tiny mmdet detector (tests/data/configs/) over images
made here."""
import glob
import json
import os
import pickle
import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.runner.checkpoint import _load_checkpoint
from PIL import Image

import mmcvig  # noqa: F401  (the checkpoints hold mmengine objects: mmcvig.compat)

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / 'tests' / 'data' / 'configs'
CLS_ITERS_PER_EPOCH = 2  # 8 training images in batches of 4
NUM_CLS_VAL = 4
NUM_DET_VAL = 2


def make_cls_images(root):
    """data/tiny_cls/{train,val}/{dark,light}/*.png: 32x32 noisy dark or light images."""
    rng = np.random.default_rng(0)
    for split, per_class in (('train', 4), ('val', NUM_CLS_VAL // 2)):
        for name, level in (('dark', 50), ('light', 200)):
            folder = root / 'data' / 'tiny_cls' / split / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(level - 40, level + 40, (32, 32, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f'{i}.png')


def make_det_images(root):
    """data/tiny_det/: 64x64 images, each with one light square or bar on dark noise,
    and their COCO annotations in train.json (4 images) and val.json (2)."""
    rng = np.random.default_rng(0)
    folder = root / 'data' / 'tiny_det'
    (folder / 'images').mkdir(parents=True)
    categories = [dict(id=1, name='square'), dict(id=2, name='bar')]
    for split, first, count in (('train', 0, 4), ('val', 4, NUM_DET_VAL)):
        images, annotations = [], []
        for img_id in range(first, first + count):
            label = img_id % 2
            w, h = (20, 20) if label == 0 else (32, 10)
            x, y = (int(v) for v in rng.integers(0, 64 - 32, 2))
            pixels = rng.integers(0, 60, (64, 64, 3), dtype=np.uint8)
            pixels[y:y + h, x:x + w] = 220
            Image.fromarray(pixels).save(folder / 'images' / f'{img_id}.png')
            images.append(dict(id=img_id, file_name=f'{img_id}.png', width=64, height=64))
            annotations.append(
                dict(id=img_id, image_id=img_id, category_id=label + 1, bbox=[x, y, w, h],
                     area=w * h, iscrowd=0))
        with open(folder / f'{split}.json', 'w') as f:
            json.dump(dict(images=images, annotations=annotations, categories=categories), f)


def run_tool(tool, config, *args, cwd):
    """Runs tools/<tool> on tests/data/configs/<config> from ``cwd``, without PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    result = subprocess.run(
        [sys.executable, str(ROOT / 'tools' / tool), str(CONFIGS / config), *map(str, args)],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-5000:]
    return log


def load_test_metrics(work_dir):
    """The metrics tools/test.py logged: <work_dir>/<timestamp>/<timestamp>.json."""
    [metrics_file] = glob.glob(str(work_dir / '*' / '*.json'))
    with open(metrics_file) as f:
        return json.load(f)


@pytest.fixture(scope='module')
def cls_trained(tmp_path_factory):
    """(cwd, work_dir) after one epoch of tools/train.py on the classifier."""
    cwd = tmp_path_factory.mktemp('cls')
    make_cls_images(cwd)
    run_tool('train.py', 'tiny_cls.py', '--work-dir', 'work', cwd=cwd)
    return cwd, cwd / 'work'


def test_classifier_train_then_test(cls_trained):
    cwd, work_dir = cls_trained
    ckpt = work_dir / 'epoch_1.pth'
    assert _load_checkpoint(str(ckpt))['meta']['iter'] == CLS_ITERS_PER_EPOCH

    run_tool('test.py', 'tiny_cls.py', ckpt, '--work-dir', 'test', '--out', 'preds.pkl',
             cwd=cwd)

    with open(cwd / 'preds.pkl', 'rb') as f:
        preds = pickle.load(f)
    assert len(preds) == NUM_CLS_VAL
    assert all(p['pred_label'].item() in (0, 1) for p in preds)
    assert 0 <= load_test_metrics(cwd / 'test')['accuracy/top1'] <= 100


def test_classifier_resume_continues(cls_trained):
    cwd, work_dir = cls_trained
    log = run_tool('train.py', 'tiny_cls.py', '--work-dir', work_dir, '--resume',
                   '--cfg-options', 'train_cfg.max_epochs=2', cwd=cwd)

    assert f'resumed epoch: 1, iter: {CLS_ITERS_PER_EPOCH}' in log
    meta = _load_checkpoint(str(work_dir / 'epoch_2.pth'))['meta']
    assert (meta['epoch'], meta['iter']) == (2, 2 * CLS_ITERS_PER_EPOCH)


def test_classifier_amp(cls_trained):
    cwd, _ = cls_trained
    log = run_tool('train.py', 'tiny_cls.py', '--work-dir', 'amp', '--amp', cwd=cwd)

    # mmengine's AmpOptimWrapper needs a GPU; on the CPU, --amp autocasts to bfloat16.
    wrapper = 'AmpOptimWrapper' if torch.cuda.is_available() else 'CPUAmpOptimWrapper'
    assert f"type='{wrapper}'" in log
    assert (cwd / 'amp' / 'epoch_1.pth').exists()


def test_detector_train_then_test_with_tta(tmp_path):
    make_det_images(tmp_path)
    run_tool('train.py', 'tiny_det.py', '--work-dir', 'work', cwd=tmp_path)
    ckpt = tmp_path / 'work' / 'epoch_1.pth'

    run_tool('test.py', 'tiny_det.py', ckpt, '--work-dir', 'test', '--out', 'preds.pkl',
             '--tta', cwd=tmp_path)

    with open(tmp_path / 'preds.pkl', 'rb') as f:
        preds = pickle.load(f)
    assert len(preds) == NUM_DET_VAL
    # DumpDetResults drops the ground truth and keeps the predictions.
    assert all('pred_instances' in p and 'gt_instances' not in p for p in preds)
    assert all(p['pred_instances']['bboxes'].shape[-1] == 4 for p in preds)
    assert 'coco/bbox_mAP' in load_test_metrics(tmp_path / 'test')


@pytest.mark.parametrize('tool,images', [('make_toy_coco.py', 'train'),
                                         ('make_toy_seg.py', 'img_dir/train')])
def test_toy_data_tools(tool, images, tmp_path, capsys):
    main = runpy.run_path(str(ROOT / 'tools' / 'misc' / tool))['main']
    out = tmp_path / 'toy'
    small = ['--out', str(out), '--num-train', '2', '--num-val', '1', '--min-side', '96',
             '--max-side', '128']
    main(small)
    assert 'Wrote the' in capsys.readouterr().out
    assert len(list((out / images).iterdir())) == 2
    main(small)  # up to date
    assert 'nothing written' in capsys.readouterr().out
    with pytest.raises(SystemExit, match=f'{tool[:-3]}: .*--force'):
        main([*small, '--num-train', '3'])
    with pytest.raises(SystemExit, match='min_side <= max_side'):
        main(['--out', str(tmp_path / 'bad'), '--min-side', '200', '--max-side', '100'])
