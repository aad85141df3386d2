"""suan_kernels: Triton kernels of unified attention, their references and drop-in layers.

Ops live one folder each (``ops/unified_attention/``, ``ops/target_attention/``); ``layers.py`` holds
the ``nn.Module`` drop-ins. Installed under the import name ``suan_kernels`` (the source folder
is ``kernels/``).
"""
from ._nvtx import nvtx_range
from .layers import (FusedUnifiedAttention, ReferenceUnifiedAttention, RelativeAttentionBias, UnifiedSelfAttention,
                     swap_to_fused, swap_to_reference)
from .ops.target_attention import target_attention, target_bias
from .ops.unified_attention import (DENSE, AttentionCall, AttentionPattern, position_index, reuse_bias,
                                set_bias_grad_mode, time_bucket, unified_attention)

__all__ = [
    "unified_attention", "AttentionPattern", "AttentionCall", "DENSE", "target_attention", "target_bias",
    "time_bucket", "position_index", "reuse_bias", "set_bias_grad_mode",
    "RelativeAttentionBias", "UnifiedSelfAttention", "ReferenceUnifiedAttention", "FusedUnifiedAttention",
    "swap_to_fused", "swap_to_reference", "nvtx_range",
]
