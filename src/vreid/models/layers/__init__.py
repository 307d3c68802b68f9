"""Reusable layers: global pooling (`POOLS`, `make_pool`), `BNNeck`, identity classifiers (`CLASSIFIERS`)."""
from vreid.models.layers.classifiers import (
    CLASSIFIERS, ArcFace, CircleSoftmax, CosFace, CosineClassifier, LinearClassifier,
)
from vreid.models.layers.neck import BNNeck
from vreid.models.layers.pooling import GAP, GMP, POOLS, AvgMaxPool, GeM, make_pool

__all__ = ["CLASSIFIERS", "ArcFace", "CircleSoftmax", "CosFace", "CosineClassifier", "LinearClassifier", "BNNeck",
           "POOLS", "GAP", "GMP", "GeM", "AvgMaxPool", "make_pool"]
