"""The toy segmentation run: its data set generator, the checks of bad segmentation data,
the toy Semantic FPN config trained and tested through mmengine's Runner and through
tools/train.py and tools/test.py, and mmseg's inferencer on a toy checkpoint."""
import hashlib
import importlib.util
import os
import pickle
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.runner import Runner, save_checkpoint
from mmseg.datasets import BaseSegDataset
from PIL import Image
from test_tools import load_test_metrics, run_tool

from mmcvig.datasets.checks import check_data
from mmcvig.datasets.seg_checks import (SegDataError, add_seg_data_check, allowed_values,
                                        check_seg_dataset, value_ranges)
from mmcvig.datasets.toy_seg import (CLASSES, IGNORE_INDEX, ToySegDataset, ToySegSpec, downsample,
                                     generate, image_size, render_image)

ROOT = Path(__file__).resolve().parents[1]
TOY_CONFIG = ROOT / 'configs' / 'toy' / 'fpn_cvig-mini_toy-seg.py'
TINY = ToySegSpec(num_train=4, num_val=2)
# 2 iterations of 2 images, validation after the second.
SHORT_RUN = ['train_cfg.max_iters=2', 'train_cfg.val_interval=2',
             'train_dataloader.batch_size=2', 'default_hooks.logger.interval=1']
METRICS = ('mIoU', 'mAcc', 'aAcc')

pytestmark = pytest.mark.usefixtures('one_thread')


@pytest.fixture(scope='module')
def tiny_root(tmp_path_factory):
    """A working directory holding the tiny toy set at data/toy_seg, where the toy
    config looks for it."""
    cwd = tmp_path_factory.mktemp('toy_seg')
    generate(str(cwd / 'data' / 'toy_seg'), TINY)
    return cwd


def toy_dataset(root, split='train', **kwargs):
    return ToySegDataset(data_root=str(root), data_prefix=dict(
        img_path=f'img_dir/{split}', seg_map_path=f'ann_dir/{split}'), **kwargs)


def digest(folder: Path) -> str:
    sha = hashlib.sha256()
    for path in sorted(folder.rglob('*')):
        if path.is_file():
            sha.update(str(path.relative_to(folder)).encode() + path.read_bytes())
    return sha.hexdigest()


# -------------------------------------------------------------------------- generator
def test_images_and_label_maps_match():
    seen = set()
    for index in range(12):
        rng = np.random.default_rng([0, 0, index])
        height, width = image_size(rng, ToySegSpec())
        image, labels = render_image(rng, height, width, max_objects=4)
        assert image.shape == (height, width, 3) and image.dtype == np.uint8
        assert labels.shape == (height, width) and labels.dtype == np.uint8
        values = set(np.unique(labels).tolist())
        assert values <= set(range(len(CLASSES))) | {IGNORE_INDEX}
        # Ignored: the anti-aliased pixels on edges only, a thin line around objects.
        assert (labels == IGNORE_INDEX).mean() < 0.08
        seen |= values
    assert seen == set(range(len(CLASSES))) | {IGNORE_INDEX}


def test_sizes_are_mixed_both_orientations():
    sizes = [image_size(np.random.default_rng([0, 0, i]), ToySegSpec()) for i in range(20)]
    assert all(96 <= side <= 160 for size in sizes for side in size)
    assert any(h > w for h, w in sizes) and any(w > h for h, w in sizes)


def test_mixed_pixels_are_ignored_and_averaged():
    # 2 x 3 pixels at SUPERSAMPLE 4: class 1 left of sub-pixel column 6, class 2 right.
    labels = np.ones((8, 12), np.uint8)
    labels[:, 6:] = 2
    image = np.where(labels[..., None] == 1, 0., 200.).repeat(3, 2)
    small, small_labels = downsample(image, labels)
    assert small_labels.tolist() == [[1, IGNORE_INDEX, 2]] * 2
    assert small[..., 0].tolist() == [[0., 100., 200.]] * 2  # the edge pixel is a mix


def test_generation_is_deterministic_and_idempotent(tmp_path):
    one, two = tmp_path / 'one', tmp_path / 'two'
    assert generate(str(one), TINY) and generate(str(two), TINY)
    assert digest(one) == digest(two)
    assert generate(str(one), TINY) is False  # up to date: nothing written
    with pytest.raises(FileExistsError, match=r'seed.*--force'):
        generate(str(one), ToySegSpec(num_train=4, num_val=2, seed=1))
    assert generate(str(one), ToySegSpec(num_train=4, num_val=2, seed=1), force=True)
    assert digest(one) != digest(two)
    (two / 'ann_dir' / 'val' / '000001.png').unlink()
    with pytest.raises(FileExistsError, match='files missing'):
        generate(str(two), TINY)


def test_dataset_lists_the_pairs(tiny_root):
    dataset = toy_dataset(tiny_root / 'data' / 'toy_seg', 'val')
    assert len(dataset) == TINY.num_val
    assert dataset.metainfo['classes'] == CLASSES and not dataset.reduce_zero_label
    info = dataset.get_data_info(0)
    assert info['img_path'].endswith('img_dir/val/000000.jpg')
    assert info['seg_map_path'].endswith('ann_dir/val/000000.png')
    check_seg_dataset(dataset)  # the generator's data passes its own checks


# ------------------------------------------------------------------------- bad input
@pytest.fixture
def bad_root(tmp_path, tiny_root):
    """A copy of the tiny toy set, for a test to damage."""
    root = tmp_path / 'toy_seg'
    shutil.copytree(tiny_root / 'data' / 'toy_seg', root)
    return root


def damage(root, split='train', index=1):
    """(label map path, its pixels) of one sample, to be rewritten by a test."""
    path = root / 'ann_dir' / split / f'{index:06d}.png'
    return path, np.array(Image.open(path))


def check_fails(root, *patterns, split='train'):
    with pytest.raises(SegDataError) as error:
        check_seg_dataset(toy_dataset(root, split))
    message = str(error.value)
    for pattern in patterns:
        assert pattern in message, message
    return message


def test_label_map_of_another_size(bad_root):
    path, labels = damage(bad_root)
    Image.fromarray(labels[:-3]).save(path)
    h, w = labels.shape
    check_fails(bad_root, '000001.png', f'label map is {h - 3}x{w}', f'its image {h}x{w}',
                '1 of the 4 samples')


def test_label_values_beyond_the_classes(bad_root):
    path, labels = damage(bad_root)
    labels[:2, :2], labels[-1, -1] = 7, 254
    Image.fromarray(labels).save(path)
    check_fails(bad_root, '000001.png', '000001.png: label map holds 7, 254: neither a class',
                'stored values allowed here: 0-4, 255')
    # Without the pixel read only the headers are checked, and these are fine.
    check_seg_dataset(toy_dataset(bad_root), check_values=False)


def test_colour_label_map_and_missing_one(bad_root):
    path, labels = damage(bad_root)
    Image.fromarray(np.stack([labels] * 3, -1)).save(path)
    (bad_root / 'ann_dir' / 'train' / '000002.png').unlink()
    check_fails(bad_root, '000001.png: label map has 3 channels',
                '000002.png: label map missing', '2 of the 4 samples')


def test_exif_rotated_image(bad_root):
    # A photo stored landscape with EXIF orientation 6 loads portrait (LoadImageFromFile
    # turns it), while its label map stays landscape.
    path = bad_root / 'img_dir' / 'train' / '000000.jpg'
    image = Image.open(path)
    exif = image.getexif()
    exif[0x0112] = 6
    image.save(path, exif=exif.tobytes())
    w, h = image.size
    check_fails(bad_root, '000000.jpg', f'label map is {h}x{w}', f'its image {w}x{h}')


def test_empty_dataset(bad_root):
    # The wrong image suffix: mmseg lists nothing.
    with pytest.raises(FileNotFoundError, match=r"No image ending in '\.png' under .*train"):
        toy_dataset(bad_root, img_suffix='.png')
    dataset = BaseSegDataset(data_root=str(bad_root), img_suffix='.png', serialize_data=False,
                             data_prefix=dict(img_path='img_dir/train',
                                              seg_map_path='ann_dir/train'))
    with pytest.raises(SegDataError, match=r"BaseSegDataset \(.*img_dir/train.*no samples"):
        check_seg_dataset(dataset)


def test_values_allowed_with_reduce_zero_label_and_label_map():
    class ADE:  # 150 classes stored 1..150, 0 ignored (reduce_zero_label)
        metainfo = dict(classes=tuple(range(150)))
        ignore_index, reduce_zero_label, label_map = 255, True, None

    assert value_ranges(allowed_values(ADE)) == '0-150, 255'

    class Subset:  # 3 of 5 stored classes kept (label_map), the others ignored
        metainfo = dict(classes=('a', 'b', 'c'))
        ignore_index, reduce_zero_label = 255, False
        label_map = {0: 0, 1: 255, 2: 1, 3: 2, 4: 255}

    assert value_ranges(allowed_values(Subset)) == '0-4, 255'


def test_missing_data_root_is_named(tmp_path):
    cfg = Config.fromfile(TOY_CONFIG)
    for loader in ('train_dataloader', 'val_dataloader'):
        cfg[loader].dataset.data_root = str(tmp_path / 'nowhere') + '/'
    with pytest.raises(FileNotFoundError) as error:
        check_data(cfg)
    for folder in ('img_dir/train', 'ann_dir/train', 'img_dir/val', 'ann_dir/val'):
        assert f'{tmp_path}/nowhere/{folder}' in str(error.value)
    # Built without the tools' check, the toy dataset says how to make the data.
    with pytest.raises(FileNotFoundError, match=r'nowhere.*make_toy_seg\.py --out'):
        toy_dataset(tmp_path / 'nowhere')


def test_tools_add_the_check_to_segmentation_configs():
    cfg = Config.fromfile(ROOT / 'configs' / 'fpn_cvig-s_8xb4-40k_ade20k-512x512.py')
    add_seg_data_check(cfg)
    assert [h['type'] for h in cfg.custom_hooks] == ['SegDataCheckHook']
    cfg.custom_hooks = [dict(type='SegDataCheckHook', check_values=False)]
    add_seg_data_check(cfg)  # the config's own hook and options stay
    assert cfg.custom_hooks == [dict(type='SegDataCheckHook', check_values=False)]


# --------------------------------------------------------------------- runs and tools
def runner_cfg(root, work_dir):
    cfg = Config.fromfile(TOY_CONFIG)
    cfg.train_cfg.max_iters = cfg.train_cfg.val_interval = 2
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].dataset.data_root = str(root)
        cfg[loader].num_workers = 0
        cfg[loader].persistent_workers = False
    cfg.work_dir = str(work_dir)
    return cfg


def test_runner_trains_and_tests_the_toy_config(tiny_root, tmp_path):
    cfg = runner_cfg(tiny_root / 'data' / 'toy_seg', tmp_path / 'work')
    cfg.train_dataloader.batch_size = 2
    runner = Runner.from_cfg(cfg)
    runner.train()
    assert runner.iter == 2 and (tmp_path / 'work' / 'iter_2.pth').exists()
    metrics = runner.test()
    assert all(0 <= metrics[key] <= 100 for key in METRICS), metrics


def test_runner_stops_on_bad_labels_before_training(bad_root, tmp_path):
    path, labels = damage(bad_root)
    labels[0, 0] = 9
    Image.fromarray(labels).save(path)
    runner = Runner.from_cfg(runner_cfg(bad_root, tmp_path / 'work'))
    with pytest.raises(SegDataError, match='label map holds 9: '):
        runner.train()
    assert not list((tmp_path / 'work').glob('*.pth'))


def test_inferencer_runs_a_toy_checkpoint(tmp_path):
    from mmseg.apis import MMSegInferencer
    from mmseg.registry import MODELS

    init_default_scope('mmseg')
    torch.manual_seed(0)
    model = MODELS.build(Config.fromfile(TOY_CONFIG).model)
    model.init_weights()
    checkpoint = str(tmp_path / 'toy.pth')
    save_checkpoint(dict(state_dict=model.state_dict(),
                         meta=dict(dataset_meta=ToySegDataset.METAINFO)), checkpoint)

    inferencer = MMSegInferencer(model=str(TOY_CONFIG), weights=checkpoint, device='cpu')
    image, _ = render_image(np.random.default_rng(0), 101, 137, max_objects=3)
    Image.fromarray(image).save(tmp_path / 'scene.jpg')
    result = inferencer(str(tmp_path / 'scene.jpg'))
    assert result['predictions'].shape == (101, 137)
    assert set(np.unique(result['predictions'])) <= set(range(len(CLASSES)))
    assert inferencer.model.dataset_meta['classes'] == CLASSES


@pytest.fixture
def one_thread_tools(monkeypatch):
    """One OpenMP thread in the tools' subprocesses, as the one_thread fixture gives this
    process: with two on 2 shared cores, these runs took 8x longer."""
    monkeypatch.setenv('OMP_NUM_THREADS', '1')


@pytest.mark.usefixtures('one_thread_tools')
def test_train_and_test_tools(tiny_root):
    cwd = tiny_root
    log = run_tool('train.py', TOY_CONFIG, '--work-dir', 'work', '--cfg-options', *SHORT_RUN,
                   cwd=cwd)
    assert 'SegDataCheckHook' in log and 'Saving checkpoint at 2 iterations' in log
    run_tool('test.py', TOY_CONFIG, cwd / 'work' / 'iter_2.pth', '--work-dir', 'test',
             '--tta', '--out', 'preds.pkl', cwd=cwd)
    metrics = load_test_metrics(cwd / 'test')
    assert all(0 <= metrics[key] <= 100 for key in METRICS), metrics
    with open(cwd / 'preds.pkl', 'rb') as f:
        preds = pickle.load(f)
    # One prediction per val image, at the image's size, from both TTA flips.
    sizes = [Image.open(cwd / 'data' / 'toy_seg' / 'img_dir' / 'val' / f'{i:06d}.jpg').size
             for i in range(TINY.num_val)]
    assert [tuple(p['pred_sem_seg']['data'].shape[-2:]) for p in preds] == \
        [(h, w) for w, h in sizes]


def test_default_seg_tta_loads_labels_after_the_flip():
    """Without a tta_pipeline in the config, tools/test.py --tta flips the image only:
    SegTTAModel flips the prediction back and scores it against the label map as
    stored."""
    spec = importlib.util.spec_from_file_location('test_tool', ROOT / 'tools' / 'test.py')
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    pipeline = Config.fromfile(TOY_CONFIG).test_pipeline
    tta_model, tta_pipeline = tool.default_tta(pipeline, 'mmseg')
    assert tta_model == dict(type='SegTTAModel')
    assert [t['type'] for t in tta_pipeline] == ['LoadImageFromFile', 'TestTimeAug']
    flips, loads, packs = tta_pipeline[-1]['transforms']
    assert [t['prob'] for t in flips] == [0., 1.]
    assert [t['type'] for t in loads + packs] == ['LoadAnnotations', 'PackSegInputs']


def test_train_tool_stops_on_a_label_map_of_another_size(bad_root):
    path, labels = damage(bad_root, 'val', 0)
    Image.fromarray(labels[:, :-1]).save(path)
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    env['OMP_NUM_THREADS'] = '1'
    result = subprocess.run(
        [sys.executable, str(ROOT / 'tools' / 'train.py'), str(TOY_CONFIG), '--work-dir',
         'work', '--cfg-options', *SHORT_RUN, *(f'{loader}.dataset.data_root={bad_root}'
                                                for loader in ('train_dataloader',
                                                               'val_dataloader'))],
        cwd=bad_root, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert 'SegDataError' in result.stderr and 'ann_dir/val/000000.png' in result.stderr
    assert not list((bad_root / 'work').glob('*.pth'))


def test_get_flops_on_the_toy_config(monkeypatch, capsys):
    """tools/analysis_tools/get_flops.py in this process (see test_classification.py),
    at its segmentation default, the ADE20K crop."""
    tool = ROOT / 'tools' / 'analysis_tools' / 'get_flops.py'
    monkeypatch.setattr(sys, 'argv', [str(tool), str(TOY_CONFIG)])
    runpy.run_path(str(tool), run_name='__main__')
    output = capsys.readouterr().out
    assert 'input: 1x3x512x512' in output and 'params: 0.923 M' in output, output
    assert 'GMACs, full (FlopAnalyzer)' in output
