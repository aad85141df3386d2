"""Baseline CTR models sharing SUAN's embeddings, head and trainer (one logit per candidate).

* ``PooledDNN``: mean of the behavior tokens + target + features -> MLP (no order, no timing).
* ``DIN``: target attention with DIN's activation unit (un-normalized weights from an MLP over
  [behavior, target, behavior*target, behavior-target]).
* ``BST``: a transformer encoder over [behaviors, candidate] with learned positions (each
  candidate with its own copy of the history), the candidate's output -> MLP.
* ``HSTU``: HSTU-style layers: pointwise SiLU attention with relative position/time bias,
  U-gating, jagged sequences with causal + target-isolation masks.

All take a ``ModelConfig`` (``d_model``, ``num_layers``, ``num_heads``, head sizes) so the
comparison uses the same grade sizes.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from suan_kernels import DENSE, RelativeAttentionBias
from suan_kernels.ops.unified_attention import padded_mask_and_bias

from .batch import Batch, TokenLayout
from .config import ModelConfig
from .embeddings import DenseFeatures, FieldEmbeddings
from .models import PredictionHead, count_parameters
from .registry import register_model


class _Base(nn.Module):
    """Embeddings, dense features and the head; subclasses produce one vector per candidate."""

    def __init__(self, cfg: ModelConfig, head_extra: int = 0):
        super().__init__()
        self.cfg = cfg
        self.embeddings = FieldEmbeddings(cfg)
        self.dense = DenseFeatures(cfg.schema.num_dense)
        d = cfg.d_model
        head_in = d * (1 + cfg.schema.num_features) + cfg.schema.num_dense + head_extra
        self.head = PredictionHead(head_in, cfg.head_hidden, cfg.head_activation)

    def parameter_counts(self):
        return count_parameters(self)

    def _common(self, batch: Batch):
        batch = batch.truncate(self.cfg.max_len)
        layout = TokenLayout.build(batch)
        x = self.embeddings(batch, layout)  # tokens with position and time embeddings
        feats = self.embeddings.feature_tokens(batch.features)
        dense = self.dense(batch.dense)
        return layout, x, feats, dense

    def _head(self, vec, tgt, feats, dense, tseq):
        z = torch.cat([vec, tgt, feats.flatten(1).index_select(0, tseq), dense.index_select(0, tseq)], -1)
        return self.head(z).float()

    @staticmethod
    def _padded_history(x, layout: TokenLayout, tseq: torch.Tensor):
        """Behavior tokens of each candidate's sample, padded: ``[Nt, Lmax, d]`` and a mask."""
        nb = layout.num_behaviors
        Lmax = int(nb.max()) if nb.numel() else 0
        Lmax = max(Lmax, 1)
        j = torch.arange(Lmax, device=x.device)
        valid = j[None, :] < nb.index_select(0, tseq)[:, None]
        rows = layout.offsets.index_select(0, tseq)[:, None] + j[None, :]
        rows = torch.where(valid, rows, torch.zeros_like(rows))
        hist = x.index_select(0, rows.reshape(-1)).view(rows.shape[0], Lmax, -1)
        return hist * valid[..., None], valid


@register_model("dnn", "pooled DNN: mean of the behavior tokens, no order or timing")
class PooledDNN(_Base):
    """Mean of the behavior tokens, the candidate token, features -> MLP."""

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg, head_extra=cfg.d_model)

    def forward(self, batch: Batch) -> torch.Tensor:
        layout, x, feats, dense = self._common(batch)
        B = layout.num_behaviors.numel()
        beh = x.index_select(0, layout.behavior_rows)
        pooled = x.new_zeros(B, x.shape[1]).index_add(0, layout.seq_index.index_select(0, layout.behavior_rows), beh)
        pooled = pooled / layout.num_behaviors.clamp(min=1)[:, None].to(x.dtype)
        tseq = layout.target_seq
        return self._head(pooled.index_select(0, tseq), x.index_select(0, layout.target_rows), feats, dense, tseq)


@register_model("din", "DIN: target attention with DIN's activation unit")
class DIN(_Base):
    """Deep Interest Network: activation-unit weights over behaviors for each candidate."""

    def __init__(self, cfg: ModelConfig, hidden: int = 64):
        super().__init__(cfg, head_extra=cfg.d_model)
        d = cfg.d_model
        self.att = nn.Sequential(nn.Linear(4 * d, hidden), nn.PReLU(), nn.Linear(hidden, hidden // 2),
                                 nn.PReLU(), nn.Linear(hidden // 2, 1))

    def forward(self, batch: Batch) -> torch.Tensor:
        layout, x, feats, dense = self._common(batch)
        tseq = layout.target_seq
        tgt = x.index_select(0, layout.target_rows)  # [Nt, d]
        hist, valid = self._padded_history(x, layout, tseq)  # [Nt, L, d]
        t = tgt[:, None, :].expand_as(hist)
        w = self.att(torch.cat([hist, t, hist * t, hist - t], -1)).squeeze(-1) * valid
        pooled = (w[..., None] * hist).sum(1)
        return self._head(pooled, tgt, feats, dense, tseq)


@register_model("bst", "BST: a transformer encoder over [behaviors, candidate]")
class BST(_Base):
    """Behavior Sequence Transformer: [behaviors, candidate] through a transformer encoder."""

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg, head_extra=0)
        d = cfg.d_model
        layer = nn.TransformerEncoderLayer(d, cfg.num_heads, dim_feedforward=2 * d, dropout=cfg.dropout,
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, cfg.num_layers, enable_nested_tensor=False)
        self.pos = nn.Embedding(cfg.max_len + 2, d)

    def forward(self, batch: Batch) -> torch.Tensor:
        layout, x, feats, dense = self._common(batch)
        tseq = layout.target_seq
        tgt = x.index_select(0, layout.target_rows)
        hist, valid = self._padded_history(x, layout, tseq)
        n = layout.num_behaviors.index_select(0, tseq)
        seq = torch.cat([hist, tgt[:, None, :]], 1)  # candidate last
        L = seq.shape[1]
        pos = torch.arange(L, device=x.device).clamp(max=self.cfg.max_len + 1)
        seq = seq + self.pos(pos)[None]
        pad = torch.cat([~valid, torch.zeros_like(valid[:, :1])], 1)
        out = self.encoder(seq, src_key_padding_mask=pad)
        return self._head(out[:, -1], feats, dense, tseq)

    def _head(self, vec, feats, dense, tseq):
        z = torch.cat([vec, feats.flatten(1).index_select(0, tseq), dense.index_select(0, tseq)], -1)
        return self.head(z).float()


class HSTULayer(nn.Module):
    """One HSTU layer on padded sequences: U,V,Q,K = split(SiLU(W x)); A = SiLU(QK^T + rab) / n;
    y = x + W_o(LayerNorm(A V) * U). Causal over behaviors, candidates see behaviors + themselves."""

    def __init__(self, d: int, heads: int, rab: RelativeAttentionBias, dropout: float):
        super().__init__()
        self.h, self.dh = heads, d // heads
        self.norm = nn.LayerNorm(d)
        self.uvqk = nn.Linear(d, 4 * d)
        self.out_norm = nn.LayerNorm(d)
        self.o = nn.Linear(d, d)
        self.rab = rab
        self.dropout = nn.Dropout(dropout)

    def forward(self, x, mask, bias):
        Bq, L, d = x.shape
        u, v, q, k = F.silu(self.uvqk(self.norm(x))).chunk(4, dim=-1)
        q = q.view(Bq, L, self.h, self.dh).transpose(1, 2)
        k = k.view(Bq, L, self.h, self.dh).transpose(1, 2)
        v = v.view(Bq, L, self.h, self.dh).transpose(1, 2)
        a = F.silu(torch.matmul(q, k.transpose(-1, -2)) + bias[:, None]) * mask[:, None]
        a = a / mask.sum(-1, keepdim=True).clamp(min=1)[:, None]
        y = torch.matmul(a, v).transpose(1, 2).reshape(Bq, L, d)
        return x + self.dropout(self.o(self.out_norm(y) * u))


@register_model("hstu", "HSTU-style: pointwise SiLU attention with relative bias, U-gating")
class HSTU(_Base):
    """HSTU-style stack over ``[behaviors, candidates]`` per sample (padded), candidate outputs -> MLP."""

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg, head_extra=0)
        self.rab = RelativeAttentionBias(cfg.max_len + 1, cfg.num_time_buckets)
        self.layers = nn.ModuleList([HSTULayer(cfg.d_model, cfg.num_heads, self.rab, cfg.dropout)
                                     for _ in range(cfg.num_layers)])

    def forward(self, batch: Batch) -> torch.Tensor:
        layout, x, feats, dense = self._common(batch)
        rab = self.rab
        allowed, bias, rows, valid = padded_mask_and_bias(layout.offsets, layout.num_targets, layout.timestamps,
                                                          rab.w_pos, rab.w_time, rab.num_buckets, DENSE)
        B, L = rows.shape
        xs = x.index_select(0, rows.reshape(-1)).view(B, L, -1) * valid[..., None]
        is_t = torch.arange(L, device=x.device)[None, :] >= layout.num_behaviors[:, None]
        mask = allowed.to(x.dtype)
        for layer in self.layers:
            xs = layer(xs, mask, bias)
        tgt = xs.reshape(B * L, -1)[(valid & is_t).reshape(-1)]  # candidates in batch order
        tseq = layout.target_seq
        z = torch.cat([tgt, feats.flatten(1).index_select(0, tseq), dense.index_select(0, tseq)], -1)
        return self.head(z).float()
