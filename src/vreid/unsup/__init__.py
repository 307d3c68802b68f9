"""Unsupervised Re-ID pieces: clustering on sparse re-ranked graphs, eps schedules, neighbourhood sampling,
co-training derangements, cluster memory. The `usl` method (vreid.methods.usl) puts them together."""
from vreid.unsup.clustering import ClusteringConfig, ClusterStats, cluster_features, cluster_stats
from vreid.unsup.cotrain import random_derangement
from vreid.unsup.dbscan import drop_small_clusters, sparse_dbscan
from vreid.unsup.ensemble import EnsembleDistances, split_embedding
from vreid.unsup.memory import ClusterMemory, proxy_loss, softmax_triplet_loss
from vreid.unsup.sampling import disjoint_partitions, neighbourhood_sample, subset_size
from vreid.unsup.schedules import EPS_SCHEDULES, EpsSchedule

__all__ = ["EPS_SCHEDULES", "ClusterMemory", "ClusterStats", "ClusteringConfig", "EnsembleDistances",
           "EpsSchedule", "cluster_features", "cluster_stats", "disjoint_partitions", "drop_small_clusters",
           "neighbourhood_sample", "proxy_loss", "random_derangement", "softmax_triplet_loss", "sparse_dbscan",
           "split_embedding", "subset_size"]
