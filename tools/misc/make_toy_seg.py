"""Write the toy semantic-segmentation data set (shapes and stripes on noisy
backgrounds, mmseg's img_dir/ann_dir layout).

Idempotent: a second run with the same arguments finds the data set up to date and
writes nothing; other arguments over an existing data set are refused unless --force.
See mmcvig/datasets/toy_seg.py for what is drawn and how the label maps are coded.

Example:
  python tools/misc/make_toy_seg.py --out data/toy_seg
"""
import argparse
import os.path as osp
import sys
import time

# Run from a checkout without installing or setting PYTHONPATH.
sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from mmcvig.datasets.toy_seg import ToySegSpec, generate  # noqa: E402


def parse_args(argv=None):
    defaults = ToySegSpec()
    parser = argparse.ArgumentParser(description='Make the toy segmentation data set')
    parser.add_argument('--out', default='data/toy_seg', help='output directory')
    parser.add_argument('--num-train', type=int, default=defaults.num_train)
    parser.add_argument('--num-val', type=int, default=defaults.num_val)
    parser.add_argument('--seed', type=int, default=defaults.seed)
    parser.add_argument('--min-side', type=int, default=defaults.min_side,
                        help='smallest image height/width')
    parser.add_argument('--max-side', type=int, default=defaults.max_side,
                        help='largest image height/width')
    parser.add_argument('--max-objects', type=int, default=defaults.max_objects,
                        help='most objects per image')
    parser.add_argument('--force', action='store_true',
                        help='replace a different data set found at --out')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        spec = ToySegSpec(num_train=args.num_train, num_val=args.num_val, seed=args.seed,
                          min_side=args.min_side, max_side=args.max_side,
                          max_objects=args.max_objects)
    except ValueError as e:
        sys.exit(f'make_toy_seg: {e}')
    start = time.perf_counter()
    try:
        wrote = generate(args.out, spec, force=args.force)
    except FileExistsError as e:
        sys.exit(f'make_toy_seg: {e}')
    if wrote:
        print(f'Wrote the toy segmentation set ({spec.num_train} train / {spec.num_val} '
              f'val images) to {args.out} in {time.perf_counter() - start:.1f} s')
    else:
        print(f'{args.out} already holds this toy segmentation set; nothing written')


if __name__ == '__main__':
    main()
