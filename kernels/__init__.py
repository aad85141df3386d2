"""Triton kernels of unified attention, their references and drop-in layers."""
from .layers import (FusedUnifiedAttention, ReferenceUnifiedAttention, RelativeAttentionBias, UnifiedSelfAttention,
                     swap_to_fused, swap_to_reference)
from .ops import unified_attention
from .reference import position_index, reuse_bias, time_bucket

__all__ = [
    "unified_attention", "time_bucket", "position_index", "reuse_bias",
    "RelativeAttentionBias", "UnifiedSelfAttention", "ReferenceUnifiedAttention", "FusedUnifiedAttention",
    "swap_to_fused", "swap_to_reference",
]
