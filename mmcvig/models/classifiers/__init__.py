from .hard_distillation import HardDistillationClassifier

__all__ = ['HardDistillationClassifier']
