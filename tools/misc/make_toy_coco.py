"""Write the toy COCO instance-segmentation data set (shapes on noisy backgrounds).

Idempotent: a second run with the same arguments finds the data set up to date and
writes nothing; other arguments over an existing data set are refused unless --force.
See mmcvig/datasets/toy_coco.py for what is drawn.

Example:
  python tools/misc/make_toy_coco.py --out data/toy_coco
"""
import argparse
import os.path as osp
import sys
import time

# Run from a checkout without installing or setting PYTHONPATH.
sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from mmcvig.datasets.toy_coco import ToyCocoSpec, generate  # noqa: E402


def parse_args():
    defaults = ToyCocoSpec()
    parser = argparse.ArgumentParser(description='Make the toy COCO data set')
    parser.add_argument('--out', default='data/toy_coco', help='output directory')
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
    return parser.parse_args()


def main():
    args = parse_args()
    spec = ToyCocoSpec(num_train=args.num_train, num_val=args.num_val, seed=args.seed,
                       min_side=args.min_side, max_side=args.max_side,
                       max_objects=args.max_objects)
    start = time.perf_counter()
    try:
        wrote = generate(args.out, spec, force=args.force)
    except FileExistsError as e:
        sys.exit(f'make_toy_coco: {e}')
    if wrote:
        print(f'Wrote the toy data set ({spec.num_train} train / {spec.num_val} val '
              f'images) to {args.out} in {time.perf_counter() - start:.1f} s')
    else:
        print(f'{args.out} already holds this toy data set; nothing written')


if __name__ == '__main__':
    main()
