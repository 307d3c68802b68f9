"""RERANKERS: name -> factory(qf, gf, metric=..., **options) returning a DistanceSource of re-ranked distances.

A re-ranker registered with `any_distance=True` re-ranks by every registered distance (vreid.eval.distance); the
others treat the (prepared) rows as vectors, so `build_reranker` refuses them for a distance that is not a vector
one (e.g. weighted_parts) rather than re-rank packed rows as if they were plain features.
"""
from __future__ import annotations

from typing import Any, Callable

from vreid.errors import VreidError
from vreid.registry import Registry
from vreid.rerank.contextual import ContextualDistances
from vreid.rerank.kreciprocal import KReciprocalDistances
from vreid.rerank.query_expansion import (AlphaQueryExpansionDistances, FastReidAqeDistances,
                                          QueryExpansionDistances)
from vreid.rerank.sparse_knn import SparseKnnDistances

RERANKERS: Registry[Callable[..., Any]] = Registry("re-ranker")

RERANKERS.register("kreciprocal", exact=True, any_distance=True,
                   options="k1=20 k2=6 lambda_value=0.3 knn_backend=torch|faiss")(
    KReciprocalDistances)
RERANKERS.register("sparse", exact=False, options="k=30 lambda_value=0.3 knn_backend=torch|faiss")(
    SparseKnnDistances)
RERANKERS.register("aqe", exact=False, options="k=5 expand_gallery=False")(QueryExpansionDistances)
RERANKERS.register("alpha_qe", exact=False, options="k=5 alpha=3.0 expand_gallery=False")(
    AlphaQueryExpansionDistances)
RERANKERS.register("fastreid_aqe", exact=True, options="qe_times=1 qe_k=10 alpha=3.0 knn_backend=torch|faiss")(
    FastReidAqeDistances)
RERANKERS.register("contextual", exact=False,
                   options="model=RUN k=(the run's) gamma=(the run's) lambda_value=0 search=gallery|all chunk_size=1024")(
    ContextualDistances)

class RerankError(VreidError, ValueError):
    """A re-ranker asked to do what it cannot (e.g. re-rank a distance it does not compute); names the fix."""


#: Arguments every factory takes from the evaluator itself, never from `eval.rerank_options`.
_EVALUATOR_ARGS = ("self", "qf", "gf", "metric")


def rerankers_for(metric: str) -> list[str]:
    """The re-rankers that can re-rank distances of `metric`."""
    from vreid.eval.distance import row_distance

    vector = row_distance(metric).vector
    return [n for n in RERANKERS.names() if vector or RERANKERS.meta(n).get("any_distance")]


def build_reranker(name: str, qf: Any, gf: Any, metric: str = "euclidean", **options: Any) -> Any:
    """The DistanceSource of re-ranker `name` over these features; RerankError if it cannot use `metric`."""
    factory = RERANKERS.get(name)
    if name not in rerankers_for(metric):
        raise RerankError(f"re-ranker '{name}' treats features as plain vectors and cannot re-rank by the "
                          f"'{metric}' distance; use one of: {', '.join(rerankers_for(metric))} (or none)")
    return factory(qf, gf, metric=metric, **options)


def rerank_option_names(name: str) -> list[str]:
    """The keyword options the named re-ranker accepts (what `eval.rerank_options` may hold)."""
    import inspect

    params = inspect.signature(RERANKERS.get(name)).parameters
    return [p for p in params if p not in _EVALUATOR_ARGS]


def check_rerank_options(name: str, options: dict[str, Any]) -> str | None:
    """None if `options` fit re-ranker `name`, else what is wrong and the accepted names."""
    if name in (None, "", "none"):  # options may be meant for a re-ranker chosen at run time (--rerank)
        return None
    accepted = rerank_option_names(name)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        return f"'{unknown[0]}' is not an option of re-ranker '{name}'; it takes: {', '.join(accepted)}"
    backend = options.get("knn_backend")
    if backend is not None:
        from vreid.rerank.knn import KNN_BACKENDS

        if backend not in KNN_BACKENDS:
            return f"knn_backend {backend!r} is not one of {', '.join(KNN_BACKENDS.names())}"
    return None
