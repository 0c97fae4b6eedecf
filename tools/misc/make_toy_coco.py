"""Write the toy COCO instance-segmentation data set (shapes on noisy backgrounds).

Idempotent: a second run with the same arguments finds the data set up to date and
writes nothing; other arguments over an existing data set are refused unless --force.
See mmcvig/datasets/toy_coco.py for what is drawn.

Example:
  python tools/misc/make_toy_coco.py --out data/toy_coco
"""
import os.path as osp
import sys

# Run from a checkout without installing or setting PYTHONPATH.
sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from mmcvig.datasets.generator_cli import run_generator  # noqa: E402
from mmcvig.datasets.toy_coco import ToyCocoSpec, generate  # noqa: E402


def main(argv=None):
    run_generator('make_toy_coco', 'toy data set', ToyCocoSpec, generate,
                  'data/toy_coco', argv)


if __name__ == '__main__':
    main()
