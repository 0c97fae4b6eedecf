"""Write the toy semantic-segmentation data set (shapes and stripes on noisy
backgrounds, mmseg's img_dir/ann_dir layout).

Idempotent: a second run with the same arguments finds the data set up to date and
writes nothing; other arguments over an existing data set are refused unless --force.
See mmcvig/datasets/toy_seg.py for what is drawn and how the label maps are coded.

Example:
  python tools/misc/make_toy_seg.py --out data/toy_seg
"""
import os.path as osp
import sys

# Run from a checkout without installing or setting PYTHONPATH.
sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from mmcvig.datasets.generator_cli import run_generator  # noqa: E402
from mmcvig.datasets.toy_seg import ToySegSpec, generate  # noqa: E402


def main(argv=None):
    run_generator('make_toy_seg', 'toy segmentation set', ToySegSpec, generate,
                  'data/toy_seg', argv)


if __name__ == '__main__':
    main()
