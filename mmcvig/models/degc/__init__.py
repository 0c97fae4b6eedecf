from .centroid_attention import GlobalUpdate, cluster_means
from .degc import DEGC, GRAPH_IMPLS, DEGCIntermediates, SparseGraph
from .graph_conv import (GGCN, GGIN, GMRGCN, GRAPH_CONVS, GEdgeConv, GGraphSAGE, TokenCentroids,
                         aggregate_neighbors, build_local_update, gather_neighbors)
from .kmeans import KMEANS_INITS, Partition, partition
from .knn_graph import (ArrangedTokens, Graph, arrange_by_partition, build_graph,
                        build_graph_sparse, sort_by_cluster)

__all__ = [
    'DEGC', 'DEGCIntermediates', 'SparseGraph', 'GRAPH_IMPLS', 'GlobalUpdate', 'cluster_means',
    'ArrangedTokens', 'Graph', 'arrange_by_partition', 'build_graph', 'build_graph_sparse',
    'sort_by_cluster', 'GRAPH_CONVS', 'GGCN', 'GEdgeConv', 'GGIN', 'GGraphSAGE', 'GMRGCN',
    'TokenCentroids', 'aggregate_neighbors', 'build_local_update', 'gather_neighbors',
    'KMEANS_INITS', 'Partition', 'partition'
]
