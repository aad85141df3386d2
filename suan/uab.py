"""The Unified Attention Block (SPEC section 3).

```
x = RMSNorm_1(x)
a = SelfAttention(x)                      # kernels.UnifiedSelfAttention (jagged, RAB, masks)
x = RMSNorm_2(x + dropout(a))
c = CrossAttention(query=x, key=value=f)  # every token reads the feature tokens
g = MSGate(x, c)
x = RMSNorm_3(x + dropout(g))
out = x + dropout(SwiGLU(x))
```
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

import torch
import torch.nn.functional as F
from torch import nn

from suan_kernels import RelativeAttentionBias, UnifiedSelfAttention, nvtx_range, target_attention

from .batch import TokenLayout
from .config import ModelConfig


class FeatureCrossAttention(nn.Module):
    """Each token attends to the F feature tokens of its own sample. ``[T, d] -> [T, d]``."""

    def __init__(self, d_model: int, num_heads: int):
        super().__init__()
        self.h, self.dh = num_heads, d_model // num_heads
        self.q_proj = nn.Linear(d_model, d_model, bias=False)
        self.k_proj = nn.Linear(d_model, d_model, bias=False)
        self.v_proj = nn.Linear(d_model, d_model, bias=False)
        self.o_proj = nn.Linear(d_model, d_model, bias=False)

    def forward(self, x: torch.Tensor, feats: torch.Tensor, seq_index: torch.Tensor) -> torch.Tensor:
        """``x [T, d]`` tokens, ``feats [B, F, d]`` feature tokens, ``seq_index [T]`` int64 sample of
        each token -> ``[T, d]``."""
        T, d = x.shape
        B, Fn, _ = feats.shape
        if Fn == 0:
            return torch.zeros_like(x)
        q = self.q_proj(x).view(T, self.h, self.dh)
        k = self.k_proj(feats).view(B, Fn, self.h, self.dh)
        v = self.v_proj(feats).view(B, Fn, self.h, self.dh)
        if x.is_cuda or T == 0 or not bool((seq_index.diff() >= 0).all()):
            out = self._gathered(q, k, v, seq_index)
        else:
            out = self._padded(q, k, v, seq_index)
        return self.o_proj(out.reshape(T, d))

    def _gathered(self, q, k, v, seq_index):
        """Each token's sample's keys and values gathered per token (``[T, F, H, dh]``): no host
        sync, any token order; the GPU path."""
        scores = torch.einsum("thd,tfhd->thf", q, k.index_select(0, seq_index)) * self.dh ** -0.5
        probs = torch.softmax(scores, dim=-1)
        return torch.einsum("thf,tfhd->thd", probs, v.index_select(0, seq_index))

    def _padded(self, q, k, v, seq_index):
        """Tokens grouped by sample (``seq_index`` non-decreasing) padded to ``[B, L, H, dh]`` and
        one batched matmul per sample and head: the F-fold copies of keys and values (and their
        scatter-add gradients) of the gathered form cost a quarter of a g4 step on a CPU. Padded
        rows score against real keys but are never read back (zero gradient)."""
        B = k.shape[0]
        T = q.shape[0]
        counts = torch.bincount(seq_index, minlength=B)
        pos = torch.arange(T, device=q.device) - (counts.cumsum(0) - counts)[seq_index]
        padded = q.new_zeros(B, int(counts.max()), self.h, self.dh)
        padded = padded.index_put((seq_index, pos), q)
        scores = torch.einsum("blhd,bfhd->bhlf", padded, k) * self.dh ** -0.5
        out = torch.einsum("bhlf,bfhd->blhd", torch.softmax(scores, dim=-1), v)
        return out[seq_index, pos]


class MSGate(nn.Module):
    """Multi-perspective gate: per-sample channel weights mixing x and c.

    ``p`` = mean of (x + c) over the sample's behavior tokens (targets left out, so behaviors
    never depend on the candidates); ``h = relu(W_r p)``; ``(alpha, beta) = softmax(W_a h, W_b h)``
    per channel; ``g = alpha * x + beta * c``.
    """

    def __init__(self, d_model: int):
        super().__init__()
        hidden = max(1, d_model // 4)
        self.w_r = nn.Linear(d_model, hidden)
        self.w_a = nn.Linear(hidden, d_model)
        self.w_b = nn.Linear(hidden, d_model)

    def weights(self, x: torch.Tensor, c: torch.Tensor, layout: TokenLayout) -> torch.Tensor:
        """alpha ``[B, d]``: the weight of x per sample and channel (beta = 1 - alpha)."""
        B = layout.num_behaviors.numel()
        s = (x + c).index_select(0, layout.behavior_rows)
        beh_seq = layout.seq_index[layout.behavior_rows]
        pooled = s.new_zeros(B, s.shape[-1]).index_add(0, beh_seq, s)
        pooled = pooled / layout.num_behaviors.clamp(min=1).to(s.dtype).unsqueeze(-1)
        h = F.relu(self.w_r(pooled))
        return torch.sigmoid(self.w_a(h) - self.w_b(h))  # softmax over the pair (w_x, w_c)

    @staticmethod
    def mix(alpha: torch.Tensor, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return alpha * x + (1 - alpha) * c

    def forward(self, x: torch.Tensor, c: torch.Tensor, layout: TokenLayout) -> torch.Tensor:
        return self.mix(self.weights(x, c, layout).index_select(0, layout.seq_index), x, c)


class SwiGLU(nn.Module):
    """``W3(silu(W1 x) * W2 x)`` with hidden width ``mult * d``."""

    def __init__(self, d_model: int, mult: int = 3):
        super().__init__()
        self.w1 = nn.Linear(d_model, mult * d_model, bias=False)
        self.w2 = nn.Linear(d_model, mult * d_model, bias=False)
        self.w3 = nn.Linear(mult * d_model, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w3(F.silu(self.w1(x)) * self.w2(x))


class UnifiedAttentionBlock(nn.Module):
    """One UAB over the jagged token stream ``[T, d]`` with feature tokens ``[B, F, d]``."""

    def __init__(self, cfg: ModelConfig, rab: RelativeAttentionBias):
        super().__init__()
        d = cfg.d_model
        self.norm1 = nn.RMSNorm(d)
        self.attn = UnifiedSelfAttention(d, cfg.num_heads, rab, pattern=cfg.pattern, backend=cfg.attention_backend)
        self.norm2 = nn.RMSNorm(d)
        self.use_cross = cfg.use_cross_attention
        self.use_gate = cfg.use_msgate
        if self.use_cross:
            self.cross = FeatureCrossAttention(d, cfg.num_heads)
            self.gate = MSGate(d) if self.use_gate else None
            self.norm3 = nn.RMSNorm(d)
        self.ffn = SwiGLU(d)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, feats: torch.Tensor, layout: TokenLayout,
                capture: Optional[List["LayerCache"]] = None) -> torch.Tensor:
        """``x [T, d]`` -> ``[T, d]``. With ``capture``, appends this layer's behavior keys/values and
        gate weights (what scoring against a cached history needs)."""
        with nvtx_range("suan/uab"):
            x = self.norm1(x)
            a = self.attn(x, layout.offsets, layout.timestamps, layout.num_targets)
            if capture is not None:
                _, k, v = self.attn.project(x.index_select(0, layout.behavior_rows))
            x = self.norm2(x + self.dropout(a))
            alpha = None
            if self.use_cross:
                c = self.cross(x, feats, layout.seq_index)
                alpha = self._alpha(x, c, layout)
                x = self.norm3(x + self.dropout(MSGate.mix(alpha.index_select(0, layout.seq_index), x, c)))
            if capture is not None:
                capture.append(LayerCache(k, v, alpha))
            return x + self.dropout(self.ffn(x))

    def _alpha(self, x, c, layout: TokenLayout) -> torch.Tensor:
        """The gate's weight of x per sample ``[B, d]`` (0.5 everywhere without MSGate)."""
        if self.gate is not None:
            return self.gate.weights(x, c, layout)
        return x.new_full((layout.num_behaviors.numel(), x.shape[-1]), 0.5)

    def forward_candidates(self, x: torch.Tensor, feats: torch.Tensor, cache: "LayerCache",
                           ts_beh: torch.Tensor, request_ts: torch.Tensor, bias=None) -> torch.Tensor:
        """Candidate tokens ``[K, d]`` of one user against the cached layer state (eval mode):
        O(K * n) per layer instead of re-running the history."""
        with nvtx_range("suan/uab_cached"):
            x = self.norm1(x)
            q, k, v = self.attn.project(x)
            rab = self.attn.rab
            a = target_attention(q, k, v, cache.k, cache.v, ts_beh, request_ts, rab.w_pos, rab.w_time,
                                 num_buckets=rab.num_buckets, bias=bias)
            x = self.norm2(x + self.attn.o_proj(a.reshape(x.shape)))
            if self.use_cross:
                c = self.cross(x, feats, torch.zeros(x.shape[0], dtype=torch.long, device=x.device))
                x = self.norm3(x + MSGate.mix(cache.alpha, x, c))
            return x + self.ffn(x)


@dataclass
class LayerCache:
    """One layer's state of an encoded history: behavior keys/values ``[n, H, dh]`` and the gate
    weights ``[1, d]`` (they depend on behaviors only)."""

    k: torch.Tensor
    v: torch.Tensor
    alpha: Optional[torch.Tensor]  # None without cross-attention

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.k, self.v, self.alpha) if t is not None)
