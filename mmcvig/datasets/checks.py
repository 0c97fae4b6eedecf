"""Say where a config expects its data, before a Runner fails deep inside a dataset."""
import os.path as osp

LOADERS = ('train_dataloader', 'val_dataloader', 'test_dataloader')


def _datasets(dataset: dict):
    """The leaf dataset configs of ``dataset`` (through wrappers such as RepeatDataset)."""
    if 'dataset' in dataset:
        yield from _datasets(dataset['dataset'])
    elif 'datasets' in dataset:
        for child in dataset['datasets']:
            yield from _datasets(child)
    else:
        yield dataset


def missing_data(cfg, loaders=LOADERS) -> list:
    """Local paths that the datasets of ``cfg``'s ``loaders`` read and that do not exist.

    Checks each dataset's annotation file (``data_root`` + ``ann_file``) or, for folder
    datasets without one, its ``data_root`` / ``data_prefix`` folders (images, and label
    maps for mmseg). Datasets with
    ``backend_args`` (remote storage) are skipped.
    """
    missing = []
    for loader in loaders:
        if not cfg.get(loader):
            continue
        for dataset in _datasets(cfg[loader]['dataset']):
            if dataset.get('backend_args'):
                continue
            root = dataset.get('data_root') or ''
            ann_file = dataset.get('ann_file')
            paths = [osp.join(root, ann_file)] if ann_file else \
                [osp.join(root, p) for p in _prefixes(dataset.get('data_prefix'))]
            missing += [(loader, path, root) for path in paths if path and not osp.exists(path)]
    return missing


def _prefixes(prefix) -> list:
    """The folders a dataset without an annotation file lists: mmpretrain's string
    prefix, mmdet's ``img``, mmseg's ``img_path`` and ``seg_map_path`` (label maps)."""
    if isinstance(prefix, dict):
        return [prefix[k] for k in ('img', 'img_path', 'seg_map_path') if prefix.get(k)] or ['']
    return [prefix or '']


def check_data(cfg, loaders=LOADERS):
    """Raise ``FileNotFoundError`` naming every missing path and where the data must go.

    Raises:
        FileNotFoundError: when a dataset of ``loaders`` reads a path that is not there.
    """
    missing = missing_data(cfg, loaders)
    if not missing:
        return
    lines = [f'  {loader}: {path}' for loader, path, _ in missing]
    roots = sorted({root for _, _, root in missing if root})
    raise FileNotFoundError(
        'The data set of this config is not where the config expects it:\n' +
        '\n'.join(lines) + '\n' +
        (f'Put it under {", ".join(roots)} (layouts: docs/detection.md#coco, '
         'docs/classification.md#data, docs/segmentation.md) or point the config '
         'elsewhere, e.g. --cfg-options train_dataloader.dataset.data_root=PATH/ (and '
         'the val/test loaders, evaluator).'
         if roots else 'Fix the paths in the config or with --cfg-options.'))
