"""The pinned stack is installed, and mmcv's compiled ops run on the CPU."""
import subprocess
import sys

import torch


def test_stack_imports_in_a_fresh_interpreter():
    # A fresh process: what the tools and the demo see, not what other tests imported.
    subprocess.run(
        [sys.executable, '-c',
         'import mmcvig, mmcv.ops, mmdet, mmpretrain.models, torch_geometric, torch_scatter'],
        check=True)


def test_mmcv_nms_on_cpu():
    from mmcv.ops import nms

    # Boxes 0 and 1 overlap with IoU 0.81 > 0.5, so box 1 goes.
    boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 10., 10.], [20., 20., 30., 30.]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    dets, keep = nms(boxes, scores, iou_threshold=0.5)
    assert keep.tolist() == [0, 2]
    torch.testing.assert_close(dets[:, :4], boxes[[0, 2]])
    torch.testing.assert_close(dets[:, 4], scores[[0, 2]])
