from .cvig_cls_head import ClusterViGClsHead

__all__ = ['ClusterViGClsHead']
