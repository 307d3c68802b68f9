"""Re-ranking: exact k-reciprocal computed sparsely, the O(kN) mutual-kNN variant, query expansion, and the
learned contextual re-ranker (vreid.rerank.contextual)."""
from vreid.rerank.contextual import ContextualDistances
from vreid.rerank.kreciprocal import KReciprocalDistances, k_reciprocal
from vreid.rerank.knn import KNN_BACKENDS, knn
from vreid.rerank.query_expansion import expand_queries
from vreid.rerank.registry import RERANKERS, check_rerank_options, rerank_option_names
from vreid.rerank.sparse_knn import SparseKnnDistances, sparse_rerank_graph
