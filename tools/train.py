# Copyright (c) OpenMMLab. All rights reserved. Adapted for mmcvig.
"""Train a detector (``default_scope='mmdet'``), a classifier
(``default_scope='mmpretrain'``) or a semantic segmentor (``default_scope='mmseg'``) with
mmengine's Runner.

The command line is the one of mmdet's, mmpretrain's and mmseg's ``tools/train.py``.
"""
import argparse
import logging
import os.path as osp
import sys

# Runnable from a checkout without installing or setting PYTHONPATH: the repository root
# goes first on the path so that `import mmcvig` (and its compatibility fixes) is this one.
sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmengine.device import get_device  # noqa: E402
from mmengine.logging import print_log  # noqa: E402

import mmcvig  # noqa: E402,F401  (applies mmcvig.compat)
from mmcvig.datasets.checks import check_data  # noqa: E402
from mmcvig.datasets.seg_checks import add_seg_data_check  # noqa: E402
from mmcvig.engine.scope import (add_common_args, build_runner, export_local_rank,  # noqa: E402
                                 load_config, merge_launch_args)

AMP_DTYPES = ('float16', 'bfloat16')
# What makes a config a detector's (with default_scope='mmdet').
DETECTOR_HEADS = ('rpn_head', 'roi_head', 'bbox_head')


def parse_args():
    parser = argparse.ArgumentParser(description='Train a model with mmcvig')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument(
        '--amp',
        action='store_true',
        default=False,
        help='enable automatic-mixed-precision training')
    parser.add_argument(
        '--amp-dtype',
        choices=AMP_DTYPES,
        help='the dtype --amp autocasts to (default: float16 on GPUs, as mmengine; '
        'bfloat16 on the CPU, which runs it natively); float16 scales the loss')
    parser.add_argument(
        '--auto-scale-lr',
        action='store_true',
        help='enable automatically scaling LR.')
    parser.add_argument(
        '--resume',
        nargs='?',
        type=str,
        const='auto',
        help='If specify checkpoint path, resume from it, while if not '
        'specify, try to auto resume from the latest checkpoint '
        'in the work directory.')
    add_common_args(parser)
    args = parser.parse_args()
    if args.amp_dtype is not None and not args.amp:
        parser.error('--amp-dtype applies to --amp only')
    export_local_rank(args)
    return args


def enable_amp(cfg, dtype=None):
    """Mixed precision in ``dtype`` ('float16', 'bfloat16' or None for the device's
    default): mmengine's AmpOptimWrapper on an accelerator, CPUAmpOptimWrapper on the
    CPU; float16 with dynamic loss scaling on both. On the CPU a detector autocasts its
    backbone and neck only (:func:`autocast_detector_trunk`)."""
    optim_wrapper = cfg.optim_wrapper.get('type', 'OptimWrapper')
    if optim_wrapper in ('AmpOptimWrapper', 'CPUAmpOptimWrapper'):
        print_log('AMP training is already enabled in your config.',
                  logger='current', level=logging.WARNING)
        if dtype is not None:  # the command line wins over the config
            cfg.optim_wrapper.dtype = dtype
        if optim_wrapper == 'CPUAmpOptimWrapper':
            autocast_detector_trunk(cfg)
        return
    assert optim_wrapper == 'OptimWrapper', (
        '`--amp` is only supported when the optimizer wrapper type is '
        f'`OptimWrapper` but got {optim_wrapper}.')
    if get_device() == 'cpu':
        # mmengine 0.10.7's AmpOptimWrapper asserts an accelerator: autocast on the CPU
        # with mmcvig.engine.CPUAmpOptimWrapper instead, bfloat16 unless asked.
        dtype = dtype or 'bfloat16'
        scaling = ' and dynamic loss scaling' if dtype == 'float16' else ''
        print_log(f'--amp on the CPU: {dtype} autocast{scaling} with CPUAmpOptimWrapper.',
                  logger='current', level=logging.WARNING)
        cfg.optim_wrapper.type = 'CPUAmpOptimWrapper'
        cfg.optim_wrapper.dtype = dtype
        if dtype == 'float16':
            cfg.optim_wrapper.loss_scale = 'dynamic'
        autocast_detector_trunk(cfg)
    else:
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.loss_scale = 'dynamic'
        if dtype is not None:  # else mmengine's default: float16 on CUDA
            cfg.optim_wrapper.dtype = dtype


def is_detector(cfg) -> bool:
    """Whether ``cfg`` builds an mmdet detector: its default scope is mmdet (see
    mmcvig.engine.scope.scope_of), or its model has an RPN, RoI or box head."""
    model = cfg.get('model') or {}
    return (cfg.get('default_scope') == 'mmdet'
            or any(head in model for head in DETECTOR_HEADS))


def autocast_detector_trunk(cfg):
    """CPUAmpOptimWrapper autocasting a detector's backbone and neck only (unless the
    config names its own ``autocast_modules``): the heads then run in float32, as mmcv
    2.1's CPU NMS and RoIAlign require."""
    model = cfg.get('model') or {}
    modules = tuple(name for name in ('backbone', 'neck') if name in model)
    if not is_detector(cfg) or not modules or 'autocast_modules' in cfg.optim_wrapper:
        return
    print_log(f'--amp on the CPU: the detector autocasts its {" and ".join(modules)} '
              "only, its heads run in float32 (mmcv's CPU NMS and RoIAlign kernels take "
              "float32 only; on CUDA, mmengine's AmpOptimWrapper autocasts the whole "
              'detector).', logger='current', level=logging.WARNING)
    cfg.optim_wrapper.autocast_modules = modules


def merge_args(cfg, args):
    """Apply the rest of the command line to the config (CLI > config > defaults)."""
    merge_launch_args(cfg, args)
    if args.amp:
        enable_amp(cfg, args.amp_dtype)

    if args.auto_scale_lr:
        if 'enable' in cfg.get('auto_scale_lr', {}) and \
                'base_batch_size' in cfg.auto_scale_lr:
            cfg.auto_scale_lr.enable = True
        else:
            raise RuntimeError('Can not find "auto_scale_lr" or '
                               '"auto_scale_lr.enable" or '
                               '"auto_scale_lr.base_batch_size" in your'
                               ' configuration file.')

    # An explicit checkpoint wins over finding the latest one in work_dir.
    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume
    return cfg


def main():
    args = parse_args()
    cfg, scope = load_config(args)
    cfg = merge_args(cfg, args)
    # Before the Runner: a missing data set then says where it must go.
    check_data(cfg, ('train_dataloader', 'val_dataloader') if cfg.get('val_cfg') else
               ('train_dataloader', ))
    if scope == 'mmseg':  # label maps of another size or with stray values: named early
        add_seg_data_check(cfg)

    build_runner(cfg).train()


if __name__ == '__main__':
    main()
