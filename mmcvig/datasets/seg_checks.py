"""Check a semantic-segmentation data set once, before training or testing starts.

mmseg accepts label maps that cannot be right and fails late or not at all: a label map
of another size than its image trips a shape error when a batch's label maps are stacked
(or, where they happen to fit, trains on labels that do not line up with the pixels); a
value beyond the classes makes the cross-entropy fail with an index error on the CPU and
a device-side assert on CUDA, and ``IoUMetric`` counts such a pixel as no class's label;
a missing label map stops a dataloader worker mid-run. :func:`check_seg_dataset` walks
the data list once and names every such file with its problem; :class:`SegDataCheckHook`
runs it when training, validation or testing starts (tools/train.py and tools/test.py add
it to every mmseg config).

Sizes come from the file headers (no decoding). An image's size is the one mmseg loads:
``LoadImageFromFile`` turns a JPEG by its EXIF orientation, ``LoadAnnotations`` reads a
label map as stored. Values need the pixels: one PNG decode per label map, on a few
threads; ``check_values=False`` skips them.
"""
import os.path as osp
from concurrent.futures import ThreadPoolExecutor
from typing import List, Optional

import numpy as np
from mmengine.hooks import Hook
from mmengine.registry import HOOKS
from PIL import Image

# EXIF orientations that swap width and height (transposed and 90-degree rotations).
EXIF_ORIENTATION = 0x0112
SWAPPING_ORIENTATIONS = (5, 6, 7, 8)
MAX_LISTED = 10  # problems named in the message; the rest are counted


class SegDataError(ValueError):
    """A segmentation data set whose files cannot train or evaluate a model."""


def allowed_values(dataset) -> np.ndarray:
    """Boolean (256,): which stored uint8 values are a class or the ignore index once
    mmseg's ``LoadAnnotations`` has applied ``reduce_zero_label`` and ``label_map``."""
    num_classes = len(dataset.metainfo['classes'])
    ignore_index = getattr(dataset, 'ignore_index', 255)
    lut = np.arange(256)
    if getattr(dataset, 'reduce_zero_label', False):
        # As LoadAnnotations: 0 -> 255 (ignored), v -> v - 1, and 255 stays 255.
        lut = np.where(lut == 0, 255, lut - 1)
        lut[255] = 255
    label_map = getattr(dataset, 'label_map', None)
    if label_map:
        mapped = lut.copy()
        for old, new in label_map.items():
            mapped[lut == old] = new
        lut = mapped
    return (lut < num_classes) | (lut == ignore_index)


def loaded_image_size(path: str):
    """(height, width) of the image as mmseg's ``LoadImageFromFile`` returns it, from the
    file's header: EXIF orientations 5-8 swap the stored sides."""
    with Image.open(path) as image:
        width, height = image.size
        if image.getexif().get(EXIF_ORIENTATION) in SWAPPING_ORIENTATIONS:
            return width, height
    return height, width


def label_map_problem(path: str, image_size, allowed: Optional[np.ndarray]) -> Optional[str]:
    """What is wrong with the label map at ``path`` for an image of ``image_size``
    (height, width), or None. ``allowed`` (see :func:`allowed_values`) also reads the
    pixels and checks every value; None checks the header only."""
    if not osp.isfile(path):
        return 'label map missing'
    with Image.open(path) as label:
        size = (label.size[1], label.size[0])
        if size != tuple(image_size):
            return (f'label map is {size[0]}x{size[1]} (height x width), its image '
                    f'{image_size[0]}x{image_size[1]}: every pixel needs its label')
        if len(label.getbands()) > 1:
            return (f'label map has {len(label.getbands())} channels (mode {label.mode}, a '
                    'colour rendering?): mmseg needs one channel of class indices')
        if allowed is None:
            return None
        values = np.unique(np.asarray(label)).astype(np.int64)
    bad = values[(values > 255) | ~allowed[np.clip(values, 0, 255)]]
    if len(bad):
        listed = ', '.join(str(v) for v in bad[:8]) + (', ...' if len(bad) > 8 else '')
        return (f'label map holds {listed}: neither a class nor the ignore index '
                f'(stored values allowed here: {value_ranges(allowed)})')
    return None


def value_ranges(allowed: np.ndarray) -> str:
    """'0-4, 255' for the True entries of ``allowed``."""
    values = np.flatnonzero(allowed)
    # Split where consecutive allowed values stop being consecutive.
    runs = np.split(values, np.flatnonzero(np.diff(values) > 1) + 1)
    return ', '.join(f'{r[0]}-{r[-1]}' if len(r) > 1 else f'{r[0]}' for r in runs)


def sample_problem(info: dict, allowed: Optional[np.ndarray]) -> Optional[str]:
    """What is wrong with one data-list entry (``img_path``, ``seg_map_path``), or None."""
    img_path = info['img_path']
    if not osp.isfile(img_path):
        return 'image missing'
    try:
        image_size = loaded_image_size(img_path)
    except OSError as error:  # not an image PIL can read
        return f'image unreadable ({error})'
    try:
        return label_map_problem(info['seg_map_path'], image_size, allowed)
    except OSError as error:
        return f'label map unreadable ({error})'


def _describe(dataset) -> str:
    prefix = getattr(dataset, 'data_prefix', {}) or {}
    folders = [prefix[k] for k in ('img_path', 'seg_map_path') if prefix.get(k)]
    return f'{type(dataset).__name__} ({", ".join(folders) or "no folders"})'


def leaf_datasets(dataset):
    """The datasets under wrappers: RepeatDataset's ``dataset``, ConcatDataset's
    ``datasets``."""
    if hasattr(dataset, 'datasets'):
        for child in dataset.datasets:
            yield from leaf_datasets(child)
    elif hasattr(dataset, 'dataset'):
        yield from leaf_datasets(dataset.dataset)
    else:
        yield dataset


def check_seg_dataset(dataset, check_values: bool = True, num_threads: int = 4) -> None:
    """Raise :class:`SegDataError` naming every unusable sample of ``dataset``.

    Checks each entry of a full-initialised mmseg dataset: the image and its label map
    exist, have one size (the image as loaded, EXIF included), the label map has one
    channel and (``check_values``) only class values and the ignore index. An empty data
    set is an error too. Entries without ``seg_map_path`` (inference sets) are skipped,
    and so are datasets on remote storage (``backend_args``).

    Raises:
        SegDataError: one line per problem (the first :data:`MAX_LISTED`, then a count).
    """
    for leaf in leaf_datasets(dataset):
        _check_leaf(leaf, check_values, num_threads)


def _check_leaf(dataset, check_values: bool, num_threads: int) -> None:
    if getattr(dataset, 'backend_args', None):
        return
    if len(dataset) == 0:
        raise SegDataError(
            f'{_describe(dataset)} holds no samples: no file ends in '
            f'{getattr(dataset, "img_suffix", "?")!r} under its image folder.')
    allowed = allowed_values(dataset) if check_values else None
    infos = [dataset.get_data_info(i) for i in range(len(dataset))]
    infos = [info for info in infos if info.get('seg_map_path')]
    # Decoding PNGs releases the GIL: threads overlap the reads.
    with ThreadPoolExecutor(max(1, num_threads)) as pool:
        problems = [(info, problem) for info, problem in zip(
            infos, pool.map(lambda info: sample_problem(info, allowed), infos)) if problem]
    if problems:
        raise SegDataError(_message(dataset, problems, len(infos)))


def _message(dataset, problems: List, total: int) -> str:
    lines = [f'  {info["img_path"]} / {info["seg_map_path"]}: {problem}'
             for info, problem in problems[:MAX_LISTED]]
    if len(problems) > MAX_LISTED:
        lines.append(f'  ... and {len(problems) - MAX_LISTED} more')
    return (f'{len(problems)} of the {total} samples of {_describe(dataset)} cannot be used '
            f'(image / label map: problem):\n' + '\n'.join(lines) +
            '\nLabel maps must be one-channel PNGs of the image\'s size holding class '
            'indices and the ignore index (docs/segmentation.md#bad-input).')


@HOOKS.register_module()
class SegDataCheckHook(Hook):
    """Runs :func:`check_seg_dataset` on the training and validation sets before
    training, and on the test set before testing: once per dataset and run.

    Args:
        check_values (bool): read every label map's pixels to check its values, not
            only the headers. Defaults to True.
        num_threads (int): threads reading label maps. Defaults to 4.
    """

    priority = 'VERY_HIGH'  # before hooks that would start using the data

    def __init__(self, check_values: bool = True, num_threads: int = 4):
        self.check_values = check_values
        self.num_threads = num_threads
        self._checked = set()

    def _check(self, loop):
        dataset = getattr(getattr(loop, 'dataloader', None), 'dataset', None)
        if dataset is None or id(dataset) in self._checked:
            return
        check_seg_dataset(dataset, self.check_values, self.num_threads)
        self._checked.add(id(dataset))

    def before_train(self, runner) -> None:
        self._check(runner.train_loop)
        self._check(runner.val_loop)

    def before_val(self, runner) -> None:
        self._check(runner.val_loop)

    def before_test(self, runner) -> None:
        self._check(runner.test_loop)


def add_seg_data_check(cfg) -> None:
    """Give an mmseg config the :class:`SegDataCheckHook` unless it lists one itself
    (with its own options, e.g. ``check_values=False``). tools/train.py and
    tools/test.py call it, so every segmentation data set is checked once."""
    hooks = list(cfg.get('custom_hooks') or [])
    if not any(hook.get('type') in ('SegDataCheckHook', SegDataCheckHook) for hook in hooks):
        cfg.custom_hooks = hooks + [dict(type='SegDataCheckHook')]
