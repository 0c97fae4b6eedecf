"""The command line of the toy detection and segmentation generators
(``tools/misc/make_toy_coco.py``, ``tools/misc/make_toy_seg.py``): both draw shapes on
noisy backgrounds from a spec of the same fields, idempotently."""
import argparse
import sys
import time
from typing import Callable, Optional, Sequence


def run_generator(prog: str, title: str, spec_type: type, generate: Callable,
                  default_out: str, argv: Optional[Sequence[str]] = None):
    """Parse ``argv``, build ``spec_type`` from it and ``generate(out, spec, force)``.

    Args:
        prog (str): the tool's name, prefixed to its errors.
        title (str): what it writes ("toy data set"), for the messages.
        spec_type (type): a dataclass with ``num_train``, ``num_val``, ``seed``,
            ``min_side``, ``max_side`` and ``max_objects`` whose defaults are the tool's
            and whose ``__post_init__`` raises ``ValueError`` for bad values.
        generate (callable): writes the data set; False when it was already there.
        default_out (str): ``--out`` when not given.
        argv (list[str], optional): the arguments; ``sys.argv[1:]`` when None.
    """
    defaults = spec_type()
    parser = argparse.ArgumentParser(prog=prog, description=f'Make the {title}')
    parser.add_argument('--out', default=default_out, help='output directory')
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
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        spec = spec_type(num_train=args.num_train, num_val=args.num_val, seed=args.seed,
                         min_side=args.min_side, max_side=args.max_side,
                         max_objects=args.max_objects)
        wrote = generate(args.out, spec, force=args.force)
    except (ValueError, FileExistsError) as e:
        sys.exit(f'{prog}: {e}')
    if wrote:
        print(f'Wrote the {title} ({spec.num_train} train / {spec.num_val} val images) '
              f'to {args.out} in {time.perf_counter() - start:.1f} s')
    else:
        print(f'{args.out} already holds this {title}; nothing written')
