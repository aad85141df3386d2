"""Triton kernels of unified attention, their references and drop-in layers."""
from ._nvtx import nvtx_range
from .layers import (FusedUnifiedAttention, ReferenceUnifiedAttention, RelativeAttentionBias, UnifiedSelfAttention,
                     swap_to_fused, swap_to_reference)
from .ops import unified_attention
from .target_attention import target_attention, target_bias
from .reference import position_index, reuse_bias, time_bucket

__all__ = [
    "unified_attention", "target_attention", "target_bias", "time_bucket", "position_index", "reuse_bias",
    "RelativeAttentionBias", "UnifiedSelfAttention", "ReferenceUnifiedAttention", "FusedUnifiedAttention",
    "swap_to_fused", "swap_to_reference", "nvtx_range",
]
