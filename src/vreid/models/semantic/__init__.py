"""Semantic branches built on pretrained encoders: a CLIP image encoder (`ClipSemanticEncoder`) and the AFEM
refinement of its embedding (`AFEM`), as used by CLIP-SENet."""
from vreid.models.semantic.afem import AFEM, AFEM_VARIANTS
from vreid.models.semantic.clip_encoder import ClipSemanticEncoder

__all__ = ["AFEM", "AFEM_VARIANTS", "ClipSemanticEncoder"]
