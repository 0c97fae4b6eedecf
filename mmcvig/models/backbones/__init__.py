from .cluster_vig import ClusterViG

__all__ = ['ClusterViG']
