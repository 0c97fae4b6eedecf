"""A small synthetic COCO-format instance-segmentation data set, and its dataset class.

Nothing can be downloaded here, so the detection demo and tests train on shapes drawn
on noisy backgrounds: filled circles, rotated rectangles, triangles and crosses, one hue
family per class, 1 to ``max_objects`` per image, varied sizes, overlapping. Occlusion
is real: an object's mask (and box) is what is left visible of it. Masks are stored as
polygons that rasterise (with pycocotools, as mmdet and the COCO evaluation do) to
exactly the pixels painted in the image.

Everything is drawn from ``numpy.random.default_rng([seed, split, image])``: the same
spec gives the same files, and an image does not depend on how many others are made.

Layout under ``out_dir``::

    train/000000.jpg ...   val/000000.jpg ...
    annotations/instances_train.json, annotations/instances_val.json
    manifest.json          the spec it was made from (written last)
"""
import json
import os
import os.path as osp
from dataclasses import dataclass
from typing import List

import cv2
import numpy as np
from mmdet.datasets import CocoDataset
from mmdet.registry import DATASETS
from PIL import Image

from .drawing import fill_polygon, rotate
from .manifest import MANIFEST, write_once
from .toy_spec import ToySpec

CLASSES = ('circle', 'rectangle', 'triangle', 'cross')
# One saturated hue per class over desaturated backgrounds: the toy detector can learn
# within minutes on a CPU, yet still has to find extents and shapes for boxes and masks.
PALETTE = ((220, 60, 50), (60, 190, 70), (50, 90, 220), (230, 200, 40))
SPLITS = ('train', 'val')
# Bump when the drawing changes, so that an old data set is not taken for a new one.
FORMAT_VERSION = 1
# The least share of an object that must stay visible under the ones drawn after it.
MIN_VISIBLE = 0.5
PLACEMENT_TRIES = 20
GENERATE_HINT = 'python tools/misc/make_toy_coco.py --out {root}'


@dataclass(frozen=True)
class ToyCocoSpec(ToySpec):
    """What a toy data set is made from (see :class:`~.toy_spec.ToySpec`)."""
    CLASSES = CLASSES
    FORMAT_VERSION = FORMAT_VERSION
    SMALLEST_SIDE = 64

    num_train: int = 240
    num_val: int = 60
    seed: int = 0
    min_side: int = 160
    max_side: int = 320
    max_objects: int = 6


# ----------------------------------------------------------------------------- drawing
def shape_outline(rng, label: int, size: float) -> np.ndarray:
    """Vertices (n, 2) of a class-``label`` shape about the origin, ``size`` across."""
    radius = size / 2
    if CLASSES[label] == 'circle':
        t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
        return radius * np.stack([np.cos(t), np.sin(t)], 1)
    if CLASSES[label] == 'rectangle':
        # Aspect ratio up to 2: long enough to tell from a circle or a cross.
        half = radius * np.array([1.0, rng.uniform(0.5, 1.0)]) / np.sqrt(2)
        points = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * half
    elif CLASSES[label] == 'triangle':
        # Jittered equilateral corners: no sliver triangles.
        t = np.arange(3) * 2 * np.pi / 3 + rng.uniform(-0.3, 0.3, 3)
        points = radius * np.stack([np.cos(t), np.sin(t)], 1)
    else:  # cross: a plus sign with arms a third as wide as it is long
        a, b = radius, radius / 3
        points = np.array([[-b, -a], [b, -a], [b, -b], [a, -b], [a, b], [b, b], [b, a],
                           [-b, a], [-b, b], [-a, b], [-a, -b], [-b, -b]])
    return rotate(points, rng.uniform(0, 2 * np.pi))


def mask_to_polygons(mask: np.ndarray) -> List[List[float]]:
    """COCO polygons whose rasterisation is exactly ``mask`` (a hole-free mask).

    Contours are traced on the mask upsampled 2x and mapped back by ``(c + 0.5) / 2``:
    they then run a quarter pixel inside the outer edges of the boundary pixels, and
    pycocotools fills every one of those pixels. Traced at 1x, they would run through the
    boundary pixels' centres and lose about half of each (~10% of a small object).
    """
    big = np.kron(mask.astype(np.uint8), np.ones((2, 2), np.uint8))
    contours, _ = cv2.findContours(big, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return [((c.reshape(-1, 2) + 0.5) / 2).ravel().tolist() for c in contours if len(c) >= 3]


def has_hole(mask: np.ndarray) -> bool:
    """Whether the mask encloses background (COCO polygons cannot express it)."""
    _, hierarchy = cv2.findContours(mask.astype(np.uint8), cv2.RETR_CCOMP,
                                    cv2.CHAIN_APPROX_SIMPLE)
    return hierarchy is not None and bool((hierarchy[0, :, 3] >= 0).any())


def place_objects(rng, height: int, width: int, max_objects: int):
    """Object masks painted in order, each the part left visible by later ones.

    A placement is redrawn when it would leave an earlier object less than
    :data:`MIN_VISIBLE` visible or holed.

    Returns:
        tuple[list[int], list[np.ndarray]]: class indices and visible masks.
    """
    labels, full, visible = [], [], []
    for _ in range(rng.integers(1, max_objects + 1)):
        for _ in range(PLACEMENT_TRIES):
            label = int(rng.integers(len(CLASSES)))
            # Log-uniform sizes: as many small objects as large ones.
            size = np.exp(rng.uniform(np.log(16), np.log(0.5 * min(height, width))))
            center = rng.uniform([size / 2, size / 2], [width - size / 2, height - size / 2])
            mask = fill_polygon(shape_outline(rng, label, size) + center, height, width)
            under = [v & ~mask for v in visible]
            if mask.sum() >= 16 and all(
                    u.sum() >= MIN_VISIBLE * f.sum() and not has_hole(u)
                    for u, f in zip(under, full)):
                labels.append(label)
                full.append(mask)
                visible = under + [mask]
                break
    return labels, visible


def render_image(rng, height: int, width: int, max_objects: int):
    """An RGB uint8 image and its objects: (labels, visible masks)."""
    # Smooth greyish background (a 4x4 grid of tones blown up) plus pixel noise.
    tones = rng.uniform(70, 170, (4, 4, 1)) + rng.uniform(-20, 20, (4, 4, 3))
    image = cv2.resize(tones, (width, height), interpolation=cv2.INTER_CUBIC)
    labels, masks = place_objects(rng, height, width, max_objects)
    for label, mask in zip(labels, masks):
        colour = np.array(PALETTE[label]) + rng.uniform(-30, 30, 3)
        image[mask] = colour * rng.uniform(0.8, 1.1, (int(mask.sum()), 1))
    image += rng.normal(0, 12, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), labels, masks


def coco_annotation(mask: np.ndarray, label: int) -> dict:
    ys, xs = np.nonzero(mask)
    x0, y0 = int(xs.min()), int(ys.min())
    return dict(category_id=label + 1, segmentation=mask_to_polygons(mask),
                area=float(mask.sum()), iscrowd=0,
                bbox=[x0, y0, int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1])


# ------------------------------------------------------------------------------ writing
def write_split(out_dir: str, split: str, spec: ToyCocoSpec) -> dict:
    """Draw and save one split's images; returns its COCO annotation dict."""
    os.makedirs(osp.join(out_dir, split))
    images, annotations = [], []
    for index in range(spec.num_images(split)):
        rng = np.random.default_rng([spec.seed, SPLITS.index(split), index])
        height, width = (int(s) for s in rng.integers(spec.min_side, spec.max_side + 1, 2))
        image, labels, masks = render_image(rng, height, width, spec.max_objects)
        file_name = f'{index:06d}.jpg'
        Image.fromarray(image).save(osp.join(out_dir, split, file_name), quality=92)
        images.append(dict(id=index, file_name=file_name, height=height, width=width))
        for label, mask in zip(labels, masks):
            annotations.append(dict(coco_annotation(mask, label), id=len(annotations) + 1,
                                    image_id=index))
    categories = [dict(id=i + 1, name=name, supercategory='shape')
                  for i, name in enumerate(CLASSES)]
    return dict(images=images, annotations=annotations, categories=categories)


def ann_file(out_dir: str, split: str) -> str:
    return osp.join(out_dir, 'annotations', f'instances_{split}.json')


def _owned_paths(out_dir: str) -> List[str]:
    """What the generator writes, and all that ``force`` removes."""
    return [osp.join(out_dir, p) for p in (*SPLITS, 'annotations', MANIFEST)]


def _is_complete(out_dir: str, spec: ToyCocoSpec) -> bool:
    """Both annotation files and every image are there."""
    for split in SPLITS:
        folder = osp.join(out_dir, split)
        if not osp.isfile(ann_file(out_dir, split)) or not osp.isdir(folder) or \
                len(os.listdir(folder)) != spec.num_images(split):
            return False
    return True


def generate(out_dir: str, spec: ToyCocoSpec = ToyCocoSpec(), force: bool = False) -> bool:
    """Write the toy data set to ``out_dir``.

    Idempotent: returns False, writing nothing, when ``out_dir`` already holds the data
    set of ``spec``; True when it wrote it.

    Raises:
        FileExistsError: ``out_dir`` holds other files and ``force`` is not set.
    """
    def write():
        os.makedirs(osp.join(out_dir, 'annotations'), exist_ok=True)
        for split in SPLITS:
            coco = write_split(out_dir, split, spec)
            with open(ann_file(out_dir, split), 'w') as f:
                json.dump(coco, f)

    return write_once(out_dir, spec.manifest(), lambda: _is_complete(out_dir, spec),
                      _owned_paths(out_dir), write, force)


# ------------------------------------------------------------------------------ dataset
@DATASETS.register_module()
class ToyCocoDataset(CocoDataset):
    """:class:`CocoDataset` over the toy shapes, whose missing annotation file is
    reported with the command that makes it (mmdet only says ``No such file``)."""

    METAINFO = dict(classes=CLASSES, palette=list(PALETTE))

    def load_data_list(self) -> List[dict]:
        # Local files only: with backend_args the data may live elsewhere.
        if self.backend_args is None and not osp.isfile(self.ann_file):
            root = self.data_root or osp.dirname(osp.dirname(self.ann_file))
            raise FileNotFoundError(
                f'Toy COCO annotations not found: {self.ann_file}. The toy data set must '
                f'be under {root or "."}; make it with `{GENERATE_HINT.format(root=root)}` '
                '(tools/demo.sh does).')
        return super().load_data_list()
