"""A small synthetic semantic-segmentation data set in mmseg's layout, and its dataset.

Nothing can be downloaded here, so the segmentation demo and tests train on drawn
scenes: discs, rotated squares and triangles (one hue family per class) and patches of
stripes (random colours and angle: only the texture tells them) on smooth noisy
backgrounds, 1 to ``max_objects`` per image, overlapping. Images have mixed sizes,
portrait and landscape, ``min_side`` to ``max_side`` pixels a side.

Label maps follow mmseg's defaults rather than ADE20K's ``reduce_zero_label``: 0 is a
real class (background), the shapes are 1..4 and 255 marks pixels to ignore. mmseg's
dataset, decode-head loss, ``IoUMetric`` and batch padding (``seg_pad_val``) all take 255
as the ignore index by default, so nothing has to be set in the config; with
``reduce_zero_label`` the background would be neither learnt nor predicted, and every
background pixel of an inferred map would show some object class. Scenes are drawn at
``SUPERSAMPLE`` times the resolution and averaged down, so object edges are anti-aliased
as in a photo; a pixel that the edge crosses holds a mix of classes and is labelled 255.

Everything is drawn from ``numpy.random.default_rng([seed, split, image])``: the same
spec gives the same files, and an image does not depend on how many others are made.

Layout under ``out_dir`` (mmseg's ``img_dir``/``ann_dir``)::

    img_dir/train/000000.jpg ...   img_dir/val/000000.jpg ...
    ann_dir/train/000000.png ...   ann_dir/val/000000.png ...   (uint8, one channel)
    manifest.json                  the spec it was made from (written last)
"""
import os
import os.path as osp
from dataclasses import dataclass
from typing import List, Tuple

import cv2
import numpy as np
from mmseg.datasets import BaseSegDataset
from mmseg.registry import DATASETS
from PIL import Image

from .drawing import fill_polygon, rotate
from .manifest import MANIFEST, write_once
from .toy_spec import ToySpec

CLASSES = ('background', 'disc', 'square', 'triangle', 'stripes')
# Colours of the label maps when drawn (mmseg's visualiser); the image colours of the
# shape classes are hue families around the same values.
PALETTE = ((0, 0, 0), (220, 60, 50), (60, 190, 70), (50, 90, 220), (230, 200, 40))
IGNORE_INDEX = 255
SPLITS = ('train', 'val')
IMG_DIR, ANN_DIR = 'img_dir', 'ann_dir'
# Bump when the drawing changes, so that an old data set is not taken for a new one.
FORMAT_VERSION = 1
SUPERSAMPLE = 4  # sub-pixels a side per pixel: anti-aliased edges, mixed pixels ignored
MIN_OBJECT = 20  # px, the smallest object size (diameter, side, stripe patch)
GENERATE_HINT = 'python tools/misc/make_toy_seg.py --out {root}'


@dataclass(frozen=True)
class ToySegSpec(ToySpec):
    """What a toy segmentation set is made from (see :class:`~.toy_spec.ToySpec`)."""
    CLASSES = CLASSES
    FORMAT_VERSION = FORMAT_VERSION
    SMALLEST_SIDE = 2 * MIN_OBJECT

    num_train: int = 240
    num_val: int = 60
    seed: int = 0
    min_side: int = 96
    max_side: int = 160
    max_objects: int = 4


# ----------------------------------------------------------------------------- drawing
def shape_outline(rng, label: int, size: float) -> np.ndarray:
    """Vertices (n, 2) of a class-``label`` region about the origin, ``size`` across."""
    radius = size / 2
    name = CLASSES[label]
    if name == 'disc':
        t = np.linspace(0, 2 * np.pi, 96, endpoint=False)
        return radius * np.stack([np.cos(t), np.sin(t)], 1)
    if name == 'square':
        points = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * radius / np.sqrt(2)
    elif name == 'triangle':
        # Jittered equilateral corners: no sliver triangles.
        t = np.arange(3) * 2 * np.pi / 3 + rng.uniform(-0.3, 0.3, 3)
        points = radius * np.stack([np.cos(t), np.sin(t)], 1)
    else:  # stripes: a patch of any outline between square and disc, an irregular octagon
        t = np.arange(8) * np.pi / 4 + rng.uniform(-0.2, 0.2, 8)
        points = radius * rng.uniform(0.8, 1.0, (8, 1)) * np.stack([np.cos(t), np.sin(t)], 1)
    return rotate(points, rng.uniform(0, 2 * np.pi))


def stripe_texture(rng, height: int, width: int) -> np.ndarray:
    """(height, width, 3) straight stripes of two random, well-separated colours, at a
    random angle and a period of 6 to 12 pixels (in final-image pixels)."""
    first = rng.uniform(0, 255, 3)
    second = rng.uniform(0, 255, 3)
    while np.linalg.norm(first - second) < 120:  # else the stripes barely show
        second = rng.uniform(0, 255, 3)
    period = rng.uniform(6, 12) * SUPERSAMPLE
    angle = rng.uniform(0, np.pi)
    ys, xs = np.mgrid[:height, :width]
    phase = (xs * np.cos(angle) + ys * np.sin(angle)) / period
    on = (phase - np.floor(phase)) < 0.5
    return np.where(on[..., None], first, second)


def background(rng, height: int, width: int) -> np.ndarray:
    """Smooth greyish tones (a 4x4 grid blown up), float (height, width, 3)."""
    tones = rng.uniform(70, 170, (4, 4, 1)) + rng.uniform(-20, 20, (4, 4, 3))
    return cv2.resize(tones, (width, height), interpolation=cv2.INTER_CUBIC)


def render_scene(rng, height: int, width: int, max_objects: int):
    """The scene at ``SUPERSAMPLE`` x resolution: float RGB image and uint8 label map."""
    big_h, big_w = height * SUPERSAMPLE, width * SUPERSAMPLE
    image = background(rng, big_h, big_w)
    labels = np.zeros((big_h, big_w), np.uint8)
    for _ in range(rng.integers(1, max_objects + 1)):
        label = int(rng.integers(1, len(CLASSES)))
        # Log-uniform sizes: as many small objects as large ones.
        size = np.exp(rng.uniform(np.log(MIN_OBJECT), np.log(0.6 * min(height, width))))
        center = rng.uniform([size / 2, size / 2], [width - size / 2, height - size / 2])
        mask = fill_polygon((shape_outline(rng, label, size) + center) * SUPERSAMPLE,
                            big_h, big_w)
        if CLASSES[label] == 'stripes':
            image[mask] = stripe_texture(rng, big_h, big_w)[mask]
        else:
            colour = np.array(PALETTE[label]) + rng.uniform(-30, 30, 3)
            # Shading: a linear ramp across the object, so it is not one flat colour.
            ys, xs = np.nonzero(mask)
            offset = (np.stack([xs, ys], 1) / SUPERSAMPLE - center) / size  # within +-0.5
            image[mask] = colour * (1 + offset @ rng.uniform(-0.3, 0.3, 2))[:, None]
        labels[mask] = label  # painter's order: later objects cover earlier ones
    return image, labels


def downsample(image: np.ndarray, labels: np.ndarray):
    """Average each ``SUPERSAMPLE`` x ``SUPERSAMPLE`` block: the image is anti-aliased,
    and a pixel whose block holds more than one class is labelled ``IGNORE_INDEX``."""
    s = SUPERSAMPLE
    height, width = labels.shape[0] // s, labels.shape[1] // s
    image = image.reshape(height, s, width, s, 3).mean((1, 3))
    blocks = labels.reshape(height, s, width, s)
    pure = blocks.min((1, 3)) == blocks.max((1, 3))
    return image, np.where(pure, blocks[:, 0, :, 0], IGNORE_INDEX).astype(np.uint8)


def render_image(rng, height: int, width: int, max_objects: int):
    """An RGB uint8 image and its uint8 label map, both ``height x width``."""
    image, labels = downsample(*render_scene(rng, height, width, max_objects))
    image = image + rng.normal(0, 8, image.shape)  # sensor noise, after anti-aliasing
    return np.clip(image, 0, 255).astype(np.uint8), labels


def image_size(rng, spec: 'ToySegSpec') -> Tuple[int, int]:
    """(height, width), each drawn on its own: portrait, landscape and square images."""
    return tuple(int(s) for s in rng.integers(spec.min_side, spec.max_side + 1, 2))


# ------------------------------------------------------------------------------ writing
def write_split(out_dir: str, split: str, spec: ToySegSpec):
    """Draw and save one split's images (JPEG) and label maps (PNG, mode L)."""
    img_dir, ann_dir = osp.join(out_dir, IMG_DIR, split), osp.join(out_dir, ANN_DIR, split)
    os.makedirs(img_dir)
    os.makedirs(ann_dir)
    for index in range(spec.num_images(split)):
        rng = np.random.default_rng([spec.seed, SPLITS.index(split), index])
        image, labels = render_image(rng, *image_size(rng, spec), spec.max_objects)
        Image.fromarray(image).save(osp.join(img_dir, f'{index:06d}.jpg'), quality=92)
        Image.fromarray(labels, mode='L').save(osp.join(ann_dir, f'{index:06d}.png'))


def _owned_paths(out_dir: str) -> List[str]:
    """What the generator writes, and all that ``force`` removes."""
    return [osp.join(out_dir, p) for p in (IMG_DIR, ANN_DIR, MANIFEST)]


def _is_complete(out_dir: str, spec: ToySegSpec) -> bool:
    """Every image and label map is there."""
    for split in SPLITS:
        for folder in (IMG_DIR, ANN_DIR):
            path = osp.join(out_dir, folder, split)
            if not osp.isdir(path) or len(os.listdir(path)) != spec.num_images(split):
                return False
    return True


def generate(out_dir: str, spec: ToySegSpec = ToySegSpec(), force: bool = False) -> bool:
    """Write the toy segmentation set to ``out_dir``.

    Idempotent: returns False, writing nothing, when ``out_dir`` already holds the data
    set of ``spec``; True when it wrote it.

    Raises:
        FileExistsError: ``out_dir`` holds other files and ``force`` is not set.
    """
    def write():
        for split in SPLITS:
            write_split(out_dir, split, spec)

    return write_once(out_dir, spec.manifest(), lambda: _is_complete(out_dir, spec),
                      _owned_paths(out_dir), write, force)


# ------------------------------------------------------------------------------ dataset
@DATASETS.register_module()
class ToySegDataset(BaseSegDataset):
    """:class:`BaseSegDataset` over the toy scenes (its defaults fit them: ``.jpg``
    images, ``.png`` label maps, 255 ignored, no ``reduce_zero_label``), whose missing
    folders are reported with the command that makes them, and an empty image folder
    as such (mmseg lists no file, and mmengine then fails to serialise the list)."""

    METAINFO = dict(classes=CLASSES, palette=[list(c) for c in PALETTE])

    def load_data_list(self) -> List[dict]:
        # Local files only: with backend_args the data may live elsewhere.
        folders = (self.data_prefix.get('img_path'), self.data_prefix.get('seg_map_path'))
        missing = [f for f in folders if f is not None and not osp.isdir(f)]
        if self.backend_args is None and missing:
            root = self.data_root or osp.dirname(osp.dirname(missing[0]))
            raise FileNotFoundError(
                f'Toy segmentation folder not found: {", ".join(missing)}. The toy data set '
                f'must be under {root or "."}; make it with '
                f'`{GENERATE_HINT.format(root=root)}` (tools/demo.sh seg does).')
        data_list = super().load_data_list()
        if not data_list:  # mmengine would fail with `need at least one array`
            raise FileNotFoundError(f'No image ending in {self.img_suffix!r} under '
                                    f'{folders[0]}: the toy images are .jpg files.')
        return data_list
