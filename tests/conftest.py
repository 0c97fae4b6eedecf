"""Fixtures shared by the test modules."""
import importlib.util
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def load_toy_classification():
    """tools/misc/make_toy_classification.py as a module (tools/ is not a package)."""
    path = ROOT / 'tools' / 'misc' / 'make_toy_classification.py'
    spec = importlib.util.spec_from_file_location('make_toy_classification', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def one_thread():
    """One intra-op thread for a module: on 2 cores shared with other jobs, two OpenMP
    threads wait on each other and run small models several times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def on_toy_classification(tmp_path):
    """A function that points a config's train/val/test loaders at a tiny toy
    classification set (2 / 1 / 1 images per class, 12 images a batch)."""
    data_root = tmp_path / 'toy_cls'
    load_toy_classification().main(
        ['--out', str(data_root), '--train', '2', '--val', '1', '--test', '1'])

    def point(cfg):
        for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
            cfg[loader].dataset.data_root = str(data_root)
            cfg[loader].batch_size = 12
        return cfg

    return point
