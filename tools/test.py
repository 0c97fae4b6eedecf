# Copyright (c) OpenMMLab. All rights reserved. Adapted for mmcvig.
"""Test (and evaluate) a detector (``default_scope='mmdet'``), a classifier
(``default_scope='mmpretrain'``) or a semantic segmentor (``default_scope='mmseg'``) with
mmengine's Runner.

The command line is the one of mmdet's and mmpretrain's ``tools/test.py``; mmseg's
differs in ``--out``, which here, as for the others, pickles the predictions.
"""
import argparse
import os.path as osp
import sys
import warnings
from copy import deepcopy

# Runnable from a checkout without installing or setting PYTHONPATH: the repository root
# goes first on the path so that `import mmcvig` (and its compatibility fixes) is this one.
sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmengine.config import ConfigDict  # noqa: E402

import mmcvig  # noqa: E402,F401  (applies mmcvig.compat)
from mmcvig.datasets.checks import check_data  # noqa: E402
from mmcvig.datasets.seg_checks import add_seg_data_check  # noqa: E402
from mmcvig.engine.scope import (add_common_args, build_runner, export_local_rank,  # noqa: E402
                                 load_config, merge_launch_args)


def parse_args():
    parser = argparse.ArgumentParser(
        description='Test (and eval) a model with mmcvig')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument(
        '--work-dir',
        help='the directory to save the file containing evaluation metrics')
    parser.add_argument(
        '--out',
        type=str,
        help='dump predictions to a pickle file for offline evaluation')
    parser.add_argument(
        '--show', action='store_true', help='show prediction results')
    parser.add_argument(
        '--show-dir',
        help='directory where painted images will be saved. '
        'If specified, it will be automatically saved '
        'to the work_dir/timestamp/show_dir')
    parser.add_argument(
        '--wait-time', type=float, default=2, help='the interval of show (s)')
    add_common_args(parser)
    parser.add_argument(
        '--tta',
        action='store_true',
        help='test-time augmentation: the config\'s `tta_model` and '
        '`tta_pipeline`, or by default a horizontal flip')
    args = parser.parse_args()
    export_local_rank(args)
    return args


def enable_visualization(cfg, args, scope):
    hooks = cfg.default_hooks
    if 'visualization' not in hooks:
        raise RuntimeError(
            'VisualizationHook must be included in default_hooks, e.g. '
            "visualization=dict(type='VisualizationHook')")
    hook = hooks.visualization
    hook.show = args.show
    hook.wait_time = args.wait_time
    # mmdet's, mmseg's and mmpretrain's VisualizationHook name the same switches
    # differently.
    if scope == 'mmdet':
        hook.draw = True
        if args.show_dir:
            hook.test_out_dir = args.show_dir
    elif scope == 'mmseg':
        hook.draw = True
        if args.show_dir:  # as mmseg's test.py: the visualiser saves the drawings
            cfg.visualizer.save_dir = args.show_dir
    else:
        hook.enable = True
        hook.out_dir = args.show_dir


def innermost_dataset(dataset_cfg):
    """The dataset that owns the pipeline, under any dataset wrappers."""
    while 'dataset' in dataset_cfg:
        dataset_cfg = dataset_cfg.dataset
    return dataset_cfg


def default_tta(test_pipeline, scope):
    """Flip TTA as mmdet's and mmpretrain's test.py set it up: (tta_model, tta_pipeline)."""
    if scope == 'mmseg':
        return dict(type='SegTTAModel'), seg_flip_tta(test_pipeline)
    if scope == 'mmdet':
        tta_model = dict(
            type='DetTTAModel',
            tta_cfg=dict(nms=dict(type='nms', iou_threshold=0.5), max_per_img=100))
        pack = dict(
            type='PackDetInputs',
            meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                       'scale_factor', 'flip', 'flip_direction'))
    else:
        tta_model = dict(type='mmpretrain.AverageClsScoreTTA')
        pack = test_pipeline[-1]
    tta_pipeline = deepcopy(test_pipeline)
    tta_pipeline[-1] = dict(
        type='TestTimeAug',
        transforms=[[dict(type='RandomFlip', prob=1.), dict(type='RandomFlip', prob=0.)],
                    [pack]])
    return tta_model, tta_pipeline


def seg_flip_tta(test_pipeline):
    """The test pipeline with the image and its mirror image, for mmseg's SegTTAModel.
    The label map loads after the flip, as in mmseg's tta_pipelines: SegTTAModel turns
    the mirrored prediction back and scores it against the label map as stored."""
    steps = [t for t in test_pipeline[:-1] if t['type'] != 'LoadAnnotations']
    loads = [t for t in test_pipeline if t['type'] == 'LoadAnnotations']
    flips = [dict(type='RandomFlip', prob=prob, direction='horizontal') for prob in (0., 1.)]
    return deepcopy(steps) + [dict(type='TestTimeAug',
                                   transforms=[flips, *([t] for t in deepcopy(loads)),
                                               [test_pipeline[-1]]])]


def enable_tta(cfg, scope):
    dataset = innermost_dataset(cfg.test_dataloader.dataset)
    tta_model, tta_pipeline = default_tta(dataset.pipeline, scope)
    for key, default in (('tta_model', tta_model), ('tta_pipeline', tta_pipeline)):
        if key not in cfg:
            warnings.warn(f'Cannot find ``{key}`` in config, using flip TTA.')
            cfg[key] = default
    cfg.model = ConfigDict(**cfg.tta_model, module=cfg.model)
    dataset.pipeline = cfg.tta_pipeline


def dump_metric(out_file, scope):
    """The metric that pickles the predictions to ``out_file``."""
    assert out_file.endswith(('.pkl', '.pickle')), 'The dump file must be a pkl file.'
    if scope == 'mmdet':
        from mmdet.evaluation import DumpDetResults

        # Unlike mmengine's DumpResults it stores masks as RLE and drops ground truth.
        return DumpDetResults(out_file_path=out_file)
    from mmengine.evaluator import DumpResults
    return DumpResults(out_file_path=out_file)


def merge_args(cfg, args, scope):
    """Apply the rest of the command line to the config (CLI > config > defaults)."""
    merge_launch_args(cfg, args)
    cfg.load_from = args.checkpoint

    if args.show or args.show_dir:
        enable_visualization(cfg, args, scope)
    if args.tta:
        enable_tta(cfg, scope)
    return cfg


def main():
    args = parse_args()
    cfg, scope = load_config(args)
    cfg = merge_args(cfg, args, scope)
    check_data(cfg, ('test_dataloader', ))  # says where a missing data set must go
    if scope == 'mmseg':  # label maps of another size or with stray values: named early
        add_seg_data_check(cfg)

    runner = build_runner(cfg)
    if args.out is not None:
        runner.test_evaluator.metrics.append(dump_metric(args.out, scope))
    runner.test()


if __name__ == '__main__':
    main()
