"""Show what DEGC does on an image: the k-means partition of the tokens and the k-NN
graph of one token, for chosen blocks of a ClusterViG backbone.

One panel per block: the image with every token coloured by its cluster (alpha blended,
at the token grid), the chosen token (white star) and lines to its graph neighbours
(dots; the token itself is neighbour 0). A neighbour is always in the token's cluster.

The partition and graph are those the forward computed, as it reports them:
``ClusterViG.forward(x, return_intermediates=True)`` returns every block's
:class:`~mmcvig.models.degc.DEGCIntermediates` (partition and k-NN graph of the dense
path). Nothing is recomputed and the model is not touched.

Examples:
  # random-init ClusterViG-Ti on a bundled photo, blocks 0, 5 and 11
  python tools/visualize_partitions.py --out work_dirs/partitions.png
  # trained weights (a classifier checkpoint: keys 'backbone.*'), own image
  python tools/visualize_partitions.py --image demo.jpg --checkpoint cvig-ti.pth \\
      --blocks 0 11 --token 3 10
"""
import argparse
import json
import os
import os.path as osp
import sys
from typing import Dict

# Run from a checkout without installing or setting PYTHONPATH.
sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

import mmcvig  # noqa: E402,F401  (checkpoint allow-list: mmcvig.compat)
from mmcvig.analysis import partition_records  # noqa: E402
from mmcvig.models import ClusterViG  # noqa: E402

# ImageNet statistics, as the classification configs normalise.
MEAN = np.array([123.675, 116.28, 103.53], dtype=np.float32)
STD = np.array([58.395, 57.12, 57.375], dtype=np.float32)
HEADER_PX = 36  # title strip above the panels
DPI = 100


def default_image() -> Image.Image:
    """A photo shipped with an installed package, else a generated scene."""
    try:
        from skimage import data
        return Image.fromarray(data.astronaut())
    except ImportError:
        pass
    try:  # matplotlib (a dependency of the project) ships Grace Hopper's portrait
        from matplotlib import cbook
        return Image.open(cbook.get_sample_data('grace_hopper.jpg', asfileobj=False))
    except (ImportError, OSError, ValueError):
        return generated_image()


def generated_image(size: int = 256) -> Image.Image:
    """Sky, sun, a green hill and a red house: a few regions with clear boundaries."""
    yy, xx = np.mgrid[:size, :size] / size
    img = np.zeros((size, size, 3), np.float32)
    img[...] = np.stack([0.4 + 0.3 * yy, 0.6 + 0.2 * yy, np.full_like(yy, 0.95)], -1)
    img[(xx - 0.8)**2 + (yy - 0.2)**2 < 0.01] = (1.0, 0.9, 0.2)
    img[yy > 0.65 - 0.15 * np.sin(np.pi * xx)] = (0.2, 0.6, 0.2)
    img[(xx > 0.2) & (xx < 0.45) & (yy > 0.45) & (yy < 0.7)] = (0.75, 0.15, 0.1)
    return Image.fromarray((img * 255).astype(np.uint8))


def load_image(path: str, size: int) -> Image.Image:
    image = default_image() if path is None else Image.open(path)
    return image.convert('RGB').resize((size, size), Image.BICUBIC)


def to_tensor(image: Image.Image) -> torch.Tensor:
    pixels = (np.asarray(image, dtype=np.float32) - MEAN) / STD
    return torch.from_numpy(pixels).permute(2, 0, 1).unsqueeze(0)


def build_model(args) -> ClusterViG:
    arch = json.loads(args.arch_dict) if args.arch_dict else args.arch
    torch.manual_seed(args.seed)  # the random weights, when no checkpoint replaces them
    model = ClusterViG(arch, img_size=args.img_size, kmeans_init=args.kmeans_init)
    if args.checkpoint:
        from mmengine.runner import load_checkpoint

        # mmengine's loader unpickles with torch's weights_only allow-list (see
        # mmcvig/compat.py): a checkpoint file is untrusted input.
        load_checkpoint(model, args.checkpoint, map_location='cpu', strict=False,
                        revise_keys=[(r'^module\.', ''), (r'^backbone\.', '')])
    model.eval()
    return model


def token_centres(grid, size: int, indices: np.ndarray) -> np.ndarray:
    """Pixel centres (x, y) of raster token indices on a ``size`` image."""
    rows, cols = np.divmod(indices, grid[1])
    return np.stack([(cols + 0.5) * size / grid[1], (rows + 0.5) * size / grid[0]], -1)


def cluster_colours(num_clusters: int) -> np.ndarray:
    import matplotlib
    cmap = matplotlib.colormaps['tab10' if num_clusters <= 10 else 'tab20']
    return np.array([cmap(i % cmap.N)[:3] for i in range(num_clusters)])


def draw_panel(ax, image: Image.Image, record: dict, token: int, block: int, alpha: float):
    size = image.size[0]
    grid = record['grid']
    labels = record['labels'].numpy().reshape(grid)
    colours = cluster_colours(len(record['counts']))
    overlay = Image.fromarray((colours[labels] * 255).astype(np.uint8))
    overlay = overlay.resize((size, size), Image.NEAREST)
    ax.imshow(Image.blend(image, overlay, alpha))
    nbrs = record['neighbors'][token][record['valid'][token]].numpy()
    centre = token_centres(grid, size, np.array([token]))[0]
    for x, y in token_centres(grid, size, nbrs[1:]):
        ax.plot([centre[0], x], [centre[1], y], color='white', linewidth=1.0, alpha=0.9)
        ax.plot(x, y, 'o', markersize=4, markerfacecolor='black', markeredgecolor='white')
    ax.plot(*centre, '*', markersize=12, markerfacecolor='white', markeredgecolor='black')
    sizes = '/'.join(str(int(c)) for c in record['counts'])
    ax.set_title(f'block {block}: kappa={len(record["counts"])} ({sizes}), K={record["k"]}',
                 fontsize=8)
    ax.set_axis_off()


def render(image: Image.Image, records: Dict[int, dict], token: int, panel: int,
           alpha: float, out: str):
    """Write ``len(records)`` panels side by side: (n * panel) x (panel + HEADER_PX) px."""
    import matplotlib
    matplotlib.use('Agg')  # files only, no display
    import matplotlib.pyplot as plt
    blocks = sorted(records)
    width, height = len(blocks) * panel, panel + HEADER_PX
    fig = plt.figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    for i, block in enumerate(blocks):
        # [left, bottom, width, height] in figure fractions: panels fill their cell exactly
        ax = fig.add_axes([i / len(blocks), 0, 1 / len(blocks), panel / height])
        draw_panel(ax, image, records[block], token, block, alpha)
    os.makedirs(osp.dirname(osp.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=DPI)
    plt.close(fig)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Draw the DEGC token partitions and one token\'s graph neighbours',
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('--image', help='image file (default: a bundled photo)')
    parser.add_argument('--arch', default='tiny', choices=sorted(ClusterViG.arch_settings))
    parser.add_argument('--arch-dict', help='a custom arch as JSON (overrides --arch)')
    parser.add_argument('--checkpoint', help='weights (backbone or classifier checkpoint)')
    parser.add_argument('--kmeans-init', default='grid', choices=('grid', 'random'))
    parser.add_argument('--img-size', type=int, default=224, help='input (square) size')
    parser.add_argument('--blocks', type=int, nargs='+',
                        help='blocks to show (default: first, middle, last)')
    parser.add_argument('--token', type=int, nargs=2, metavar=('ROW', 'COL'),
                        help='token (grid row, col) whose neighbours to draw (default: '
                        'centre)')
    parser.add_argument('--panel-size', type=int, default=256, help='pixels per panel')
    parser.add_argument('--alpha', type=float, default=0.45, help='cluster colour opacity')
    parser.add_argument('--seed', type=int, default=0,
                        help='random weights (and random k-means initialisation)')
    parser.add_argument('--dump', help='also save the input and the drawn blocks\' labels, '
                        'counts, neighbours and valid slots to this .npz')
    parser.add_argument('--out', default='work_dirs/partitions.png')
    return parser.parse_args(argv)


def main(argv=None) -> str:
    args = parse_args(argv)
    model = build_model(args)
    num_blocks = len(model.blocks)
    blocks = args.blocks or sorted({0, num_blocks // 2, num_blocks - 1})
    bad = [b for b in blocks if not -num_blocks <= b < num_blocks]
    if bad:
        raise SystemExit(f'--blocks {bad} out of range: the model has {num_blocks} blocks')
    blocks = sorted({b % num_blocks for b in blocks})
    image = load_image(args.image, args.img_size)
    x = to_tensor(image)
    records = partition_records(model, x, blocks)
    grid = records[blocks[0]]['grid']
    row, col = args.token or (grid[0] // 2, grid[1] // 2)
    if not (0 <= row < grid[0] and 0 <= col < grid[1]):
        raise SystemExit(f'--token {row} {col} outside the {grid[0]}x{grid[1]} token grid')
    token = row * grid[1] + col
    render(image.resize((args.panel_size, args.panel_size), Image.BICUBIC), records, token,
           args.panel_size, args.alpha, args.out)
    for block in blocks:
        rec = records[block]
        nbrs = rec['neighbors'][token][rec['valid'][token]].tolist()
        print(f'block {block}: cluster sizes {rec["counts"].tolist()}, token ({row}, {col}) '
              f'in cluster {int(rec["labels"][token])}, neighbours {nbrs}')
    if args.dump:
        dump(args.dump, x, records)
    print(f'wrote {args.out}')
    return args.out


def dump(path: str, x: torch.Tensor, records: Dict[int, dict]):
    """``input`` :math:`(1, 3, H, W)` and ``block<i>_<key>`` arrays of every record."""
    arrays = {'input': x.numpy()}
    for block, rec in records.items():
        for key in ('labels', 'counts', 'neighbors', 'valid'):
            arrays[f'block{block}_{key}'] = rec[key].numpy()
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    np.savez(path, **arrays)


if __name__ == '__main__':
    main()
