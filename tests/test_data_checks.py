"""A missing data set is reported with where it must go, before training starts."""
import os.path as osp
import subprocess
import sys

import pytest
from mmengine.config import Config

from mmcvig.datasets.checks import check_data, missing_data

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def test_missing_coco_is_named_with_its_folder(tmp_path):
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'mask-rcnn_cvig-s_fpn_1x_coco.py'))
    cfg.train_dataloader.dataset.data_root = str(tmp_path / 'coco') + '/'
    cfg.val_dataloader.dataset.data_root = str(tmp_path / 'coco') + '/'
    with pytest.raises(FileNotFoundError) as error:
        check_data(cfg)
    message = str(error.value)
    assert 'annotations/instances_train2017.json' in message
    assert str(tmp_path / 'coco') in message and 'docs/detection.md#coco' in message


def test_present_data_passes(tmp_path):
    (tmp_path / 'annotations').mkdir()
    (tmp_path / 'annotations' / 'instances_train2017.json').write_text('{}')
    cfg = Config(dict(train_dataloader=dict(dataset=dict(
        type='RepeatDataset', times=2, dataset=dict(
            data_root=str(tmp_path) + '/', ann_file='annotations/instances_train2017.json')))))
    assert missing_data(cfg) == []


def test_missing_imagenet_folder_is_named(tmp_path):
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'cvig-ti_8xb128_in1k.py'))
    cfg.test_dataloader.dataset.data_root = str(tmp_path / 'imagenet')
    missing = missing_data(cfg, ('test_dataloader', ))
    assert missing and str(tmp_path / 'imagenet') in missing[0][1]


def test_train_tool_stops_with_the_message(tmp_path):
    result = subprocess.run(
        [sys.executable, 'tools/train.py', 'configs/retinanet_cvig-s_fpn_1x_coco.py',
         '--work-dir', str(tmp_path), '--cfg-options',
         f'train_dataloader.dataset.data_root={tmp_path}/nowhere/'],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert 'not where the config expects it' in result.stderr
    assert f'{tmp_path}/nowhere/annotations/instances_train2017.json' in result.stderr
