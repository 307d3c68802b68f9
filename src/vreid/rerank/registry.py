"""RERANKERS: name -> factory(qf, gf, metric=..., **options) returning a DistanceSource of re-ranked distances."""
from __future__ import annotations

from typing import Any, Callable

from vreid.registry import Registry
from vreid.rerank.kreciprocal import KReciprocalDistances
from vreid.rerank.query_expansion import AlphaQueryExpansionDistances, QueryExpansionDistances
from vreid.rerank.sparse_knn import SparseKnnDistances

RERANKERS: Registry[Callable[..., Any]] = Registry("re-ranker")

RERANKERS.register("kreciprocal", exact=True, options="k1=20 k2=6 lambda_value=0.3 knn_backend=torch|faiss")(
    KReciprocalDistances)
RERANKERS.register("sparse", exact=False, options="k=30 lambda_value=0.3 knn_backend=torch|faiss")(
    SparseKnnDistances)
RERANKERS.register("aqe", exact=False, options="k=5 expand_gallery=False")(QueryExpansionDistances)
RERANKERS.register("alpha_qe", exact=False, options="k=5 alpha=3.0 expand_gallery=False")(
    AlphaQueryExpansionDistances)
