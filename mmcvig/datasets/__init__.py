from .toy_coco import CLASSES, ToyCocoDataset, ToyCocoSpec, generate

__all__ = ['CLASSES', 'ToyCocoDataset', 'ToyCocoSpec', 'generate']
