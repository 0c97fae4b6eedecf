"""Write a small, deterministic image classification dataset for the embedded demo.

Layout (mmpretrain's ``CustomDataset``, one folder per class, ``data_prefix=<split>``)::

    OUT/{train,val,test}/<class>/<index>.png
    OUT/meta.json          # the generator's settings and a digest of every image

Six classes of procedurally drawn objects: ``disk``, ``triangle``, ``cross`` (filled
shapes) and ``hstripes``, ``vstripes``, ``checker`` (square patches of a texture). Every
image gets a random background colour with a random gradient, a foreground colour drawn
independently of the class, a random object size and position, a few small specks of
clutter, a random contrast/brightness change and Gaussian noise: a class cannot be told
from the mean colour, only from shape or texture.

Every image is generated from its own seed ``(seed, split, class, index)``, so a dataset
is the same on every machine and every run. An existing, different dataset at OUT (other
settings, or images changed since) is never overwritten without ``--force``.

Example:
  python tools/misc/make_toy_classification.py --out data/toy_cls
"""
import argparse
import hashlib
import json
import shutil
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

# Bump when the drawing changes: the digest of an old dataset no longer matches.
GENERATOR_VERSION = 1
CLASSES = ('checker', 'cross', 'disk', 'hstripes', 'triangle', 'vstripes')
SPLITS = ('train', 'val', 'test')
# Least Euclidean RGB distance between foreground and background colours, so that the
# object is visible whatever the colours drawn.
MIN_CONTRAST = 90.


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Write the toy classification dataset')
    parser.add_argument('--out', default='data/toy_cls', help='dataset root')
    parser.add_argument('--size', type=int, default=64, help='image side in pixels')
    parser.add_argument('--train', type=int, default=200, help='training images per class')
    parser.add_argument('--val', type=int, default=40, help='validation images per class')
    parser.add_argument('--test', type=int, default=60, help='test images per class')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--force', action='store_true',
                        help='replace a different dataset already at --out')
    args = parser.parse_args(argv)
    if args.size < 32:
        parser.error(f'--size must be at least 32 pixels, got {args.size}')
    for split in SPLITS:
        if getattr(args, split) < 1:
            parser.error(f'--{split} must be at least 1 image per class')
    return args


# --------------------------------------------------------------------------- drawing
def random_colour(rng):
    return rng.uniform(0, 255, 3)


def contrasting_colour(rng, background):
    """A colour at least MIN_CONTRAST away from ``background`` (rejection sampling; a
    third of the RGB cube qualifies for any background, so this ends quickly)."""
    while True:
        colour = random_colour(rng)
        if np.linalg.norm(colour - background) >= MIN_CONTRAST:
            return colour


def shape_mask(kind, size, box, rng):
    """Boolean (size, size) mask of a filled disk, triangle or cross inside ``box``."""
    x0, y0, side = box
    canvas = Image.new('L', (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    if kind == 'disk':
        draw.ellipse([x0, y0, x0 + side, y0 + side], fill=255)
    elif kind == 'triangle':
        # Apex up, its tip moved sideways a little so that triangles differ.
        apex = x0 + side / 2 + rng.uniform(-side / 6, side / 6)
        draw.polygon([(apex, y0), (x0, y0 + side), (x0 + side, y0 + side)], fill=255)
    elif kind == 'cross':
        half = side * rng.uniform(0.12, 0.18)
        mid_x, mid_y = x0 + side / 2, y0 + side / 2
        draw.rectangle([mid_x - half, y0, mid_x + half, y0 + side], fill=255)
        draw.rectangle([x0, mid_y - half, x0 + side, mid_y + half], fill=255)
    else:
        raise ValueError(f'not a shape: {kind!r}')
    return np.asarray(canvas) > 127


def texture_mask(kind, size, box, rng):
    """Boolean (size, size) mask of a square patch of stripes or checks inside ``box``."""
    x0, y0, side = box
    period = int(rng.integers(4, 9))  # pixels per light+dark pair
    ys, xs = np.mgrid[0:size, 0:size]
    phase_y, phase_x = (ys - y0) // (period / 2), (xs - x0) // (period / 2)
    if kind == 'hstripes':
        on = phase_y % 2 == 0
    elif kind == 'vstripes':
        on = phase_x % 2 == 0
    elif kind == 'checker':
        on = (phase_x + phase_y) % 2 == 0
    else:
        raise ValueError(f'not a texture: {kind!r}')
    inside = (xs >= x0) & (xs < x0 + side) & (ys >= y0) & (ys < y0 + side)
    return on & inside


def object_mask(kind, size, rng):
    """The class's object, 35-65 % of the image wide, anywhere it fits."""
    side = int(size * rng.uniform(0.35, 0.65))
    x0, y0 = (int(v) for v in rng.integers(1, size - side - 1, 2))
    draw = shape_mask if kind in ('disk', 'triangle', 'cross') else texture_mask
    return draw(kind, size, (x0, y0, side), rng)


def background(size, rng):
    """A random colour plus a linear gradient in a random direction (+-40 levels)."""
    ys, xs = np.mgrid[0:size, 0:size] / (size - 1) - 0.5
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * xs + np.sin(angle) * ys)[..., None]
    base = random_colour(rng)
    return base, base + ramp * rng.uniform(-80, 80, 3)


def add_clutter(image, size, rng):
    """0-3 specks of 2-4 pixels in random colours, so that small details alone do not
    give the class away."""
    for _ in range(int(rng.integers(0, 4))):
        w, h = (int(v) for v in rng.integers(2, 5, 2))
        x, y = (int(v) for v in rng.integers(0, size - 4, 2))
        image[y:y + h, x:x + w] = random_colour(rng)


def draw_image(kind, size, rng):
    """One uint8 (size, size, 3) RGB image of class ``kind``."""
    base, image = background(size, rng)
    image[object_mask(kind, size, rng)] = contrasting_colour(rng, base)
    add_clutter(image, size, rng)
    # Colour jitter: contrast around mid-grey, then brightness.
    image = (image - 127.5) * rng.uniform(0.7, 1.2) + 127.5 + rng.uniform(-25, 25)
    image += rng.normal(0, rng.uniform(5, 20), image.shape)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- dataset
def settings_of(args):
    """What defines a dataset: two runs with equal settings write identical images."""
    return dict(generator_version=GENERATOR_VERSION, seed=args.seed, size=args.size,
                classes=list(CLASSES), per_class={s: getattr(args, s) for s in SPLITS})


def image_files(root):
    return sorted(p for split in SPLITS for p in (root / split).rglob('*') if p.is_file())


def digest(root):
    """sha256 over every image's path (relative to ``root``) and bytes."""
    sha = hashlib.sha256()
    for path in image_files(root):
        sha.update(path.relative_to(root).as_posix().encode() + b'\0')
        sha.update(path.read_bytes())
    return sha.hexdigest()


def existing_state(root, settings):
    """'absent', 'same', or why the dataset at ``root`` differs from ``settings``."""
    if root.exists() and not root.is_dir():
        raise NotADirectoryError(f'{root} is a file, not a dataset folder')
    if not root.exists() or not any(root.iterdir()):
        return 'absent'
    meta_file = root / 'meta.json'
    if not meta_file.is_file():
        return 'it holds files but no meta.json'
    meta = json.loads(meta_file.read_text())
    if meta.get('settings') != settings:
        return f'it was made with other settings: {meta.get("settings")}'
    if meta.get('sha256') != digest(root):
        return 'its images changed since it was written'
    return 'same'


def write_split(root, split, count, settings):
    split_id = SPLITS.index(split)
    for class_id, kind in enumerate(CLASSES):
        folder = root / split / kind
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(count):
            rng = np.random.default_rng([settings['seed'], split_id, class_id, index])
            image = draw_image(kind, settings['size'], rng)
            Image.fromarray(image).save(folder / f'{index:04d}.png')


def remove_dataset(root):
    """Only what this tool writes: a --force never deletes anything else under root."""
    for split in SPLITS:
        if (root / split).is_dir():
            shutil.rmtree(root / split)
    (root / 'meta.json').unlink(missing_ok=True)


def make_dataset(root, settings, force=False):
    """Write the dataset; returns 'written' or 'up to date'."""
    root = Path(root)
    state = existing_state(root, settings)
    if state == 'same':
        return 'up to date'
    if state != 'absent':
        if not force:
            raise FileExistsError(f'{root} holds a different dataset ({state}); '
                                  'pass --force to replace it')
        remove_dataset(root)
    for split in SPLITS:
        write_split(root, split, settings['per_class'][split], settings)
    meta = dict(settings=settings, sha256=digest(root))
    (root / 'meta.json').write_text(json.dumps(meta, indent=2) + '\n')
    return 'written'


def main(argv=None):
    args = parse_args(argv)
    settings = settings_of(args)
    try:
        outcome = make_dataset(args.out, settings, args.force)
    except FileExistsError as error:
        sys.exit(f'error: {error}')
    counts = ', '.join(f'{s} {n * len(CLASSES)}' for s, n in settings['per_class'].items())
    print(f'{args.out}: {outcome} ({len(CLASSES)} classes, {args.size}x{args.size}, '
          f'{counts} images)')


if __name__ == '__main__':
    main()
