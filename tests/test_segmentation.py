"""Semantic segmentation with ClusterViG in mmseg 1.x, on the CPU and real parts only.

* mmcvig registers its models in mmseg's registry, and still imports without mmseg;
* every segmentation config under configs/ builds with its real backbone (the pyramid's
  ``out_channels`` are what its FPN or UperNet take, ImageNet initialisation,
  normalisation, ``pad_aware``), follows its recipe and, with a small ClusterViG,
  trains a step and predicts on odd image sizes;
* through a config's own ``SegDataPreProcessor``, an image's features over its own extent
  are the same alone and padded in a batch with a larger image, at every pyramid level;
* mmseg decode heads the project ships no config for (FPN, UperNet, SegFormer,
  DeepLabV3+) take the backbone from a user's few lines of config.

Nothing is downloaded: images and label maps are random.
"""
import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mmengine.config import Config, ConfigDict
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from mmengine.runner import save_checkpoint
from mmengine.structures import PixelData
from mmengine.utils import import_modules_from_strings
from mmpretrain.registry import MODELS as CLS_MODELS
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from test_padding import MINI, own_part, random_images, relative_error

from mmcvig.models import ClusterViG, SimplePyramid

ROOT = Path(__file__).resolve().parents[1]
FPN_S = ROOT / 'configs' / 'fpn_cvig-s_8xb4-40k_ade20k-512x512.py'
UPERNET_S = ROOT / 'configs' / 'upernet_cvig-s_8xb2-160k_ade20k-512x512.py'
SHIPPED = {'fpn_cvig-ti_8xb4-40k_ade20k-512x512.py', 'fpn_cvig-s_8xb4-40k_ade20k-512x512.py',
           'fpn_cvig-b_8xb4-40k_ade20k-512x512.py',
           'upernet_cvig-s_8xb2-160k_ade20k-512x512.py'}
# The recipes of the issue: (optimiser, schedulers, iterations, images per GPU, images
# per step for --auto-scale-lr). Ti and B inherit the Semantic FPN recipe of S.
FPN_RECIPE = (dict(type='AdamW', lr=2e-4, betas=(0.9, 0.999), weight_decay=1e-4),
              [dict(type='PolyLR', power=0.9, eta_min=0., begin=0, end=40000, by_epoch=False)],
              40000, 4, 32)
UPERNET_RECIPE = (dict(type='AdamW', lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01),
                  [dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
                   dict(type='PolyLR', power=1.0, eta_min=0., begin=1500, end=160000,
                        by_epoch=False)],
                  160000, 2, 16)
NUM_CLASSES = 150  # ADE20K
# Odd sizes, one landscape, one portrait: a batch of them is padded at the bottom or
# the right of each.
IMAGE_SIZES = [(67, 93), (80, 61)]
CROP = (96, 96)  # the small configs' training crop (512 x 512 in the real ones)

pytestmark = pytest.mark.usefixtures('one_thread')


def segmentation_configs():
    """Every ADE20K config under configs/ (bases aside) whose default scope is mmseg; the
    toy config has its own tests (tests/test_toy_segmentation.py)."""
    paths = sorted(p for p in (ROOT / 'configs').rglob('*.py')
                   if '_base_' not in p.parts and 'toy' not in p.parts)
    return [p for p in paths if Config.fromfile(p).get('default_scope') == 'mmseg']


SEG_CONFIGS = segmentation_configs()
CONFIG_IDS = [p.stem for p in SEG_CONFIGS]


def build(model_cfg):
    init_default_scope('mmseg')
    return MODELS.build(model_cfg)


def pyramid_consumers(model_cfg):
    """``(config dict, key, level index)`` of everything fed by the pyramid: the neck's
    in_channels, or the decode head's (all levels) and the auxiliary head's (one)."""
    first = model_cfg.neck if 'neck' in model_cfg else model_cfg.decode_head
    consumers = [(first, 'in_channels', None)]
    if 'auxiliary_head' in model_cfg:
        consumers.append((model_cfg.auxiliary_head, 'in_channels',
                          model_cfg.auxiliary_head.in_index))
    return consumers


def mini_model_cfg(path, pretrained=None):
    """The config's model with the small ClusterViG :data:`MINI` (initialised from
    ``pretrained`` by the config's own init_cfg, or from scratch) and :data:`CROP`."""
    cfg = Config.fromfile(path)
    model = cfg.model
    model.backbone.arch = MINI
    if pretrained is None:
        model.backbone.init_cfg = None
    else:
        model.backbone.init_cfg.checkpoint = pretrained
    channels = ClusterViG(MINI, pyramid=model.backbone.pyramid).out_channels
    for node, key, level in pyramid_consumers(model):
        node[key] = channels if level is None else channels[level]
    model.data_preprocessor.size = CROP
    return cfg


def seg_batch(sizes, seed=0):
    """uint8 images of ``sizes`` and their data samples with random label maps."""
    gen = torch.Generator().manual_seed(seed)
    images = random_images(gen, *sizes)
    samples = []
    for height, width in sizes:
        sample = SegDataSample(metainfo=dict(img_shape=(height, width),
                                             ori_shape=(height, width)))
        sample.gt_sem_seg = PixelData(
            data=torch.randint(0, NUM_CLASSES, (1, height, width), generator=gen))
        samples.append(sample)
    return images, samples


def loss_backward_predict(model):
    """One loss and backward on a padded batch of :data:`IMAGE_SIZES`, then a prediction
    of every image alone (mmseg predicts a batch of one size only)."""
    images, samples = seg_batch(IMAGE_SIZES)
    model.train()
    losses = model(**model.data_preprocessor(dict(inputs=images, data_samples=samples), True),
                   mode='loss')
    loss, _ = model.parse_losses(losses)
    assert torch.isfinite(loss)
    loss.backward()
    backbone = model.backbone
    assert backbone.stem[0].conv.weight.grad.abs().sum() > 0
    for level in backbone.pyramid.levels:  # every level feeds the head
        for p in level.parameters():
            assert p.grad.abs().sum() > 0

    model.eval()
    images, samples = seg_batch(IMAGE_SIZES, seed=1)
    for image, sample in zip(images, samples):
        with torch.no_grad():
            [result] = model.val_step(dict(inputs=[image], data_samples=[sample]))
        height, width = image.shape[1:]
        # Back at the image's own size, the test-time padding cropped off.
        assert result.pred_sem_seg.shape == (height, width)
        assert result.seg_logits.data.shape[1:] == (height, width)
        assert torch.isfinite(result.seg_logits.data).all()


# ------------------------------------------------------------------------ registration
def test_mmseg_configs_find_clustervig():
    cfg = Config.fromfile(FPN_S)
    assert cfg.default_scope == 'mmseg' and cfg.custom_imports.imports == ['mmcvig']
    import_modules_from_strings(**cfg.custom_imports)
    init_default_scope('mmseg')
    # In mmseg's own registry, as in mmdet's and mmpretrain's, not through a parent.
    assert MODELS.module_dict['ClusterViG'] is ClusterViG
    assert MODELS.module_dict['SimplePyramid'] is SimplePyramid
    assert isinstance(MODELS.build(dict(type='ClusterViG', arch=MINI)), ClusterViG)


def test_mmcvig_imports_without_mmseg():
    # mmseg is optional (the GPU machines have none): a fresh interpreter to which
    # `import mmseg` fails as when it is not installed.
    code = '\n'.join([
        'import sys',
        'class NoMmseg:',
        '    def find_spec(self, name, path, target=None):',
        "        if name.split('.')[0] == 'mmseg':",
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)",
        'sys.meta_path.insert(0, NoMmseg())',
        'import mmcvig',
        'from mmcvig.registry import REGISTRIES',
        "assert [r.scope for r in REGISTRIES] == ['mmdet', 'mmpretrain'], REGISTRIES",
        "assert 'mmseg' not in sys.modules",
    ])
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    env['OMP_NUM_THREADS'] = '1'
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                            env=env, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]


# --------------------------------------------------------------------- shipped configs
def test_every_shipped_segmentation_config_is_found():
    assert SHIPPED <= {p.name for p in SEG_CONFIGS}


@pytest.mark.parametrize('path', SEG_CONFIGS, ids=CONFIG_IDS)
def test_config_builds_with_its_real_backbone(path):
    cfg = Config.fromfile(path)
    model = build(cfg.model)
    backbone = model.backbone
    assert isinstance(backbone, ClusterViG)
    assert backbone.arch == ClusterViG.arch_settings[cfg.model.backbone.arch]
    # The pyramid (strides 4, 8, 16, 32) gives what the neck or heads are built for.
    c = backbone.embed_dims
    assert backbone.out_channels == [c // 4, c // 2, c, c]
    for node, key, level in pyramid_consumers(cfg.model):
        expected = backbone.out_channels if level is None else backbone.out_channels[level]
        assert node[key] == expected, (key, node.type)
    init = cfg.model.backbone.init_cfg
    assert (init.type, init.prefix) == ('Pretrained', 'backbone.')
    assert init.checkpoint.startswith('work_dirs/cvig-')
    assert cfg.model.pretrained is None  # mmseg's ResNet checkpoint is gone
    prep = cfg.model.data_preprocessor
    assert prep.type == 'SegDataPreProcessor'
    assert prep.mean == prep.std == [127.5] * 3 and prep.bgr_to_rgb  # the ImageNet training
    # Batches are padded (to the crop in training, to a multiple of 32 in testing): the
    # backbone keeps that padding out, and the loss ignores the padded labels.
    assert cfg.model.backbone.pad_aware is True
    assert tuple(prep.size) == tuple(cfg.crop_size) == (512, 512)
    assert prep.test_cfg == dict(size_divisor=32) and prep.pad_val == 0
    for head in (model.decode_head, getattr(model, 'auxiliary_head', None)):
        if head is not None:
            assert head.num_classes == NUM_CLASSES and head.ignore_index == prep.seg_pad_val


@pytest.mark.parametrize('path', SEG_CONFIGS, ids=CONFIG_IDS)
def test_config_follows_its_recipe(path):
    cfg = Config.fromfile(path)
    recipe = UPERNET_RECIPE if path.name.startswith('upernet') else FPN_RECIPE
    optimizer, schedulers, iterations, per_gpu, per_step = recipe
    assert cfg.optim_wrapper.optimizer == optimizer
    assert cfg.param_scheduler == schedulers
    assert cfg.train_cfg.max_iters == iterations
    assert cfg.train_dataloader.batch_size == per_gpu
    assert cfg.auto_scale_lr.base_batch_size == per_step == 8 * per_gpu
    assert cfg.sync_bn == 'torch'


@pytest.mark.parametrize('path', SEG_CONFIGS, ids=CONFIG_IDS)
def test_config_trains_a_step_and_predicts(path):
    cfg = mini_model_cfg(path)
    torch.manual_seed(0)
    model = build(cfg.model)
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    stem = model.backbone.stem[0].conv.weight
    before = stem.detach().clone()
    images, samples = seg_batch(IMAGE_SIZES)
    model.train()
    log_vars = model.train_step(dict(inputs=images, data_samples=samples), wrapper)
    assert torch.isfinite(log_vars['loss'])
    assert not torch.equal(stem, before)  # the step reached the stem
    wrapper.zero_grad()
    loss_backward_predict(model)


def test_no_weight_decay_on_norms_biases_and_pos_embed():
    cfg = mini_model_cfg(UPERNET_S)
    model = build(cfg.model)
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    decay = {id(p): g['weight_decay'] for g in wrapper.optimizer.param_groups
             for p in g['params']}
    block = model.backbone.blocks[0][0]
    assert decay[id(model.backbone.pos_embed)] == 0
    assert decay[id(block.fc1.bn.weight)] == decay[id(block.fc1.conv.bias)] == 0
    assert decay[id(block.fc1.conv.weight)] == decay[id(model.decode_head.conv_seg.weight)] == 0.01


def test_layer_decay_option():
    # What the configs' comment offers, as `--cfg-options` sets it.
    cfg = mini_model_cfg(FPN_S)
    cfg.merge_from_dict({'optim_wrapper.constructor': 'LayerDecayOptimWrapperConstructor',
                         'optim_wrapper.paramwise_cfg.layer_decay_rate': 0.5})
    model = build(cfg.model)
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    lr = {id(p): g['lr'] for g in wrapper.optimizer.param_groups for p in g['params']}
    decay = {id(p): g['weight_decay'] for g in wrapper.optimizer.param_groups
             for p in g['params']}
    base, blocks = 2e-4, MINI['num_blocks']
    backbone = model.backbone
    assert lr[id(backbone.stem[0].conv.weight)] == pytest.approx(base * 0.5**(blocks + 1))
    assert lr[id(backbone.blocks[0][0].fc1.conv.weight)] == pytest.approx(base * 0.5**blocks)
    assert lr[id(backbone.blocks[-1][1].fc2.conv.weight)] == pytest.approx(base * 0.5)
    for p in (backbone.pyramid.levels[0][0].weight, model.neck.fpn_convs[0].conv.weight,
              model.decode_head.conv_seg.weight):
        assert lr[id(p)] == pytest.approx(base)
    assert decay[id(backbone.pos_embed)] == 0  # the other rules still apply


def test_classifier_checkpoint_initialises_the_backbone(tmp_path):
    init_default_scope('mmpretrain')
    classifier = CLS_MODELS.build(dict(
        type='ImageClassifier', backbone=dict(type='ClusterViG', arch=MINI),
        head=dict(type='ClusterViGClsHead', num_classes=3, in_channels=MINI['channels'],
                  hidden_channels=16)))
    ckpt = str(tmp_path / 'cls.pth')  # the layout mmengine's Runner saves
    save_checkpoint(dict(meta=dict(epoch=300), state_dict=classifier.state_dict()), ckpt)

    segmentor = build(mini_model_cfg(UPERNET_S, ckpt).model)
    segmentor.init_weights()
    loaded = segmentor.backbone.state_dict()
    for key, value in classifier.backbone.state_dict().items():
        torch.testing.assert_close(loaded[key], value, msg=key)


# -------------------------------------------------------------------------- padding
# (own image, larger batch mate), both orientations; the batch is padded to the crop.
PAD_SIZES = [((77, 130), (160, 192)), ((333, 201), (512, 450))]


@pytest.fixture(scope='module')
def fpn_parts():
    """The FPN-S config's own SegDataPreProcessor and its backbone with the arch MINI."""
    cfg = Config.fromfile(FPN_S)
    prep = build(cfg.model.data_preprocessor)
    torch.manual_seed(0)
    backbone = build(dict(cfg.model.backbone, arch=MINI, init_cfg=None)).eval()
    return prep, backbone


@pytest.mark.parametrize('own,mate', PAD_SIZES)
def test_features_equal_alone_and_padded(fpn_parts, own, mate):
    """As tests/test_padding.py for mmdet: features of an image over its own extent,
    alone vs. padded in a batch with a larger image (1e-4 relative), at every level,
    with mmseg's normalise-then-pad (with zeros) preprocessing."""
    prep, backbone = fpn_parts
    (image, other), samples = seg_batch([own, mate], seed=sum(own))
    unpadded = copy.deepcopy(prep)
    unpadded.test_cfg = None  # stacks the image as it is
    exact = unpadded(dict(inputs=[image], data_samples=samples[:1]), False)['inputs']
    # Testing pads one image to a multiple of 32, training a batch to the crop.
    alone = prep(dict(inputs=[image], data_samples=samples[:1]), False)['inputs']
    batch = prep(dict(inputs=[image, other], data_samples=samples), True)['inputs']
    assert exact.shape[-2:] == own and batch.shape[-2:] == (512, 512)
    assert alone.shape[-2:] == tuple(-(-s // 32) * 32 for s in own) != own
    with torch.no_grad():
        levels = [backbone(x) for x in (exact, alone, batch)]
    for stride, e, a, b in zip((4, 8, 16, 32), *levels):
        e, a, b = (own_part(t[0], *own, stride) for t in (e, a, b))
        assert relative_error(a, e) < 1e-4, stride
        assert relative_error(b, e) < 1e-4, stride


# ------------------------------------------------------------ mmseg heads, no config
def drop_in_models():
    """EncoderDecoders as a user writes them for mmseg heads the project ships no config
    for: the backbone as it is, the head's channels from its ``out_channels``."""
    channels = ClusterViG(MINI, pyramid=dict()).out_channels  # C/4, C/2, C, C
    backbone = dict(type='ClusterViG', arch=MINI, pyramid=dict(), pad_aware=True)
    head = dict(num_classes=NUM_CLASSES, norm_cfg=dict(type='BN'), align_corners=False)
    levels = dict(in_channels=channels, in_index=[0, 1, 2, 3])
    models = {
        'fpn': dict(
            neck=dict(type='FPN', in_channels=channels, out_channels=32, num_outs=4),
            decode_head=dict(type='FPNHead', in_channels=[32] * 4, in_index=[0, 1, 2, 3],
                             feature_strides=[4, 8, 16, 32], channels=16, **head)),
        'upernet': dict(decode_head=dict(type='UPerHead', pool_scales=(1, 2, 3, 6),
                                         channels=16, **levels, **head)),
        'segformer': dict(decode_head=dict(type='SegformerHead', channels=16, **levels,
                                           **head)),
        # DeepLabV3+: ASPP on the stride-16 map (output stride 16, so ASPP's dilations
        # are DeepLab's for 16), the stride-4 level as its low-level features (its
        # `c1`, always input 0); a pyramid of only these two levels.
        'deeplabv3plus': dict(
            backbone=dict(backbone, pyramid=dict(scales=(4, 1))),
            decode_head=dict(type='DepthwiseSeparableASPPHead', in_channels=channels[2],
                             in_index=1, channels=16, dilations=(1, 6, 12, 18),
                             c1_in_channels=channels[0], c1_channels=8, **head)),
    }
    preprocessor = dict(type='SegDataPreProcessor', mean=[127.5] * 3, std=[127.5] * 3,
                        bgr_to_rgb=True, size_divisor=32, test_cfg=dict(size_divisor=32))
    # A ConfigDict, as a config file gives: mmseg reads `test_cfg.mode` as an attribute.
    return {name: ConfigDict(dict(type='EncoderDecoder', data_preprocessor=preprocessor,
                                  backbone=backbone, test_cfg=dict(mode='whole')), **parts)
            for name, parts in models.items()}


DROP_IN = drop_in_models()


@pytest.mark.parametrize('name', DROP_IN)
def test_backbone_drops_into_mmseg_heads(name):
    torch.manual_seed(0)
    loss_backward_predict(build(DROP_IN[name]))
