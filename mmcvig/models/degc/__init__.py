from .degc import DEGC, GRAPH_IMPLS
from .global_update import GlobalUpdate, cluster_means
from .graph import ArrangedTokens, Graph, arrange_by_partition, build_graph, build_graph_sparse
from .local_update import (GGCN, GRAPH_CONVS, GEdgeConv, GGIN, GGraphSAGE, GMRGCN,
                           build_local_update)
from .partition import KMEANS_INITS, Partition, partition

__all__ = [
    'DEGC', 'GGCN', 'GRAPH_IMPLS', 'GlobalUpdate', 'cluster_means', 'ArrangedTokens', 'Graph',
    'arrange_by_partition', 'build_graph', 'build_graph_sparse', 'GRAPH_CONVS', 'GEdgeConv',
    'GGIN', 'GGraphSAGE', 'GMRGCN', 'build_local_update', 'KMEANS_INITS', 'Partition',
    'partition'
]
