"""Building blocks of HRCN (Zhao et al., ICCV 2021): graph-relation modules, concentric part priors, the
cross-level and regional complementary branches."""
from vreid.models.hrcn.branches import CrossLevelBranch, CrossLevelStage, GraphOptions, RegionalBranch
from vreid.models.hrcn.center_pool import (
    PART_SHAPES, CenterPool, degenerate_parts, disc_masks, ring_masks, square_masks,
)
from vreid.models.hrcn.graph import GraphConv, GraphRelation, gated_affinity, normalized_adjacency
from vreid.models.hrcn.nodes import MapNode, VectorNode

__all__ = ["CrossLevelBranch", "CrossLevelStage", "GraphOptions", "RegionalBranch", "PART_SHAPES", "CenterPool",
           "degenerate_parts", "disc_masks", "ring_masks", "square_masks", "GraphConv", "GraphRelation",
           "gated_affinity", "normalized_adjacency", "MapNode", "VectorNode"]
