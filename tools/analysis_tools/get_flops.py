"""Parameters and GMACs of a detection, segmentation or classification config, without
data.

Two counts are printed (see mmcvig/analysis/complexity.py for the rules):
  * conv-only GMACs, the paper's rule (Table III): convolutions except the G-GCN MLP;
  * full GMACs: every operator mmengine's FlopAnalyzer knows, G-GCN MLP and matmuls of
    k-means, k-NN and GATv2 included.

Example:
  python tools/analysis_tools/get_flops.py configs/cvig-ti_8xb128_in1k.py
  python tools/analysis_tools/get_flops.py configs/mask-rcnn_cvig-s_fpn_1x_coco.py \\
      --shape 800 1333
  python tools/analysis_tools/get_flops.py configs/fpn_cvig-s_8xb4-40k_ade20k-512x512.py
"""
import argparse
import os.path as osp
import sys

# Run from a checkout without installing or setting PYTHONPATH.
sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

import torch  # noqa: E402
from mmengine.config import Config, DictAction  # noqa: E402
from mmengine.registry import init_default_scope  # noqa: E402

import mmcvig  # noqa: E402,F401
from mmcvig.analysis import count_conv_macs, count_full_macs, count_params  # noqa: E402

# Input H [W] per default scope when --shape is not given.
DEFAULT_SHAPES = {'mmpretrain': [224], 'mmseg': [512, 512], 'mmdet': [800, 1333]}


def parse_args():
    parser = argparse.ArgumentParser(description='Params and GMACs of a config')
    parser.add_argument('config', help='detection, segmentation or classification config')
    parser.add_argument('--shape', type=int, nargs='+', default=None,
                        help='input H [W]; default 224 (classification), 512 512 '
                        '(segmentation, the ADE20K crop) or 800 1333 (detection)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, as in tools/train.py')
    return parser.parse_args()


class _TensorForward(torch.nn.Module):
    """``model(images)`` -> backbone + neck + head tensors, for hooks and the analyzer.

    ``data_samples`` stay fixed, out of the traced inputs: mmdet's two-stage detectors
    need the image shapes to turn RPN outputs into the proposals their RoI heads take.
    """

    def __init__(self, model, data_samples=None):
        super().__init__()
        self.model = model
        self.data_samples = data_samples

    def forward(self, images):
        return self.model(images, self.data_samples, mode='tensor')


def detection_samples(height, width):
    """One mmdet data sample with the meta information of an unresized, unpadded
    ``height x width`` image, as the data preprocessor would set it."""
    from mmdet.structures import DetDataSample
    shape = (height, width)
    return [DetDataSample(metainfo=dict(img_shape=shape, ori_shape=shape, pad_shape=shape,
                                        batch_input_shape=shape, scale_factor=(1., 1.)))]


def build(cfg):
    scope = cfg.get('default_scope', 'mmdet')
    init_default_scope(scope)
    registry = __import__(f'{scope}.registry', fromlist=['MODELS']).MODELS
    model = registry.build(cfg.model)
    model.eval()
    return model, scope


def main():
    args = parse_args()
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    model, scope = build(cfg)
    shape = args.shape or DEFAULT_SHAPES.get(scope, [800, 1333])
    height, width = shape[0], shape[-1]
    samples = detection_samples(height, width) if scope == 'mmdet' else None
    wrapped = _TensorForward(model, samples)
    inputs = (torch.zeros(1, 3, height, width), )
    conv = count_conv_macs(wrapped, inputs)
    full = count_full_macs(wrapped, inputs)
    backbone = count_params(model.backbone)
    print(f'config: {args.config}\ninput: 1x3x{height}x{width}\n'
          f'params: {count_params(model) / 1e6:.3f} M (backbone {backbone / 1e6:.3f} M)\n'
          f'GMACs, paper rule (convs, no G-GCN MLP): {conv / 1e9:.3f}\n'
          f'GMACs, full (FlopAnalyzer): {full / 1e9:.3f}')


if __name__ == '__main__':
    main()
