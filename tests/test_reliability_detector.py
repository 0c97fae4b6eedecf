"""Degenerate input to a detector built on ClusterViG (the toy Mask R-CNN)."""

import pytest
import torch
from mmdet.testing import demo_mm_inputs
from test_detection import TOY_CONFIG, build_detector, mini_model_cfg


@pytest.fixture(scope='module')
def detector():
    torch.manual_seed(0)
    return build_detector(mini_model_cfg(TOY_CONFIG).model)


@pytest.mark.parametrize('name,shapes,fill', [
    ('constant', [(3, 64, 64), (3, 64, 64)], 128),
    ('all-zero', [(3, 48, 80)], 0),
    ('16x16, fewer tokens than kappa and K', [(3, 16, 16)], None),
    ('32x32', [(3, 32, 32), (3, 32, 32)], None),
])
def test_degenerate_images_train_and_predict(detector, name, shapes, fill):
    packed = demo_mm_inputs(len(shapes), shapes, num_items=[1] * len(shapes), num_classes=4,
                            with_mask=True)
    if fill is not None:
        for image in packed['inputs']:
            image.fill_(fill)
    detector.train()
    losses = detector(**detector.data_preprocessor(packed, True), mode='loss')
    loss, _ = detector.parse_losses(losses)
    assert torch.isfinite(loss), name
    loss.backward()
    detector.eval()
    with torch.no_grad():
        results = detector(**detector.data_preprocessor(packed, False), mode='predict')
    for result, (_, height, width) in zip(results, shapes):
        pred = result.pred_instances
        assert torch.isfinite(pred.bboxes).all() and torch.isfinite(pred.scores).all(), name
        assert pred.masks.shape[1:] == (height, width), name
