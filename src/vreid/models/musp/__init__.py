"""MUSP's multi-attention soft partition head (Lee et al., "Multi-attention-based soft partition network")."""
from vreid.models.musp.soft_partition import PartChannelGate, SoftPartition, SoftPartitionHead, partition_product

__all__ = ["PartChannelGate", "SoftPartition", "SoftPartitionHead", "partition_product"]
