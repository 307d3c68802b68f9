"""Building blocks of HPGN (Shen et al., T-ITS 2021): spatial graph layers over map positions, stacked into spatial
graph networks, organised in a pyramid over scales of the trunk's map."""
from vreid.models.hpgn.graph import (
    NEIGHBOUR_STEPS, SpatialGraphLayer, SpatialGraphNetwork, grid_adjacency, propagation_matrix,
)
from vreid.models.hpgn.pyramid import PyramidalGraphNetwork, pyramid_sizes, repeated_scales

__all__ = ["NEIGHBOUR_STEPS", "SpatialGraphLayer", "SpatialGraphNetwork", "grid_adjacency", "propagation_matrix",
           "PyramidalGraphNetwork", "pyramid_sizes", "repeated_scales"]
