"""Field embeddings: behavior, target and feature tokens, dense features (SPEC sections 2-3)."""
from __future__ import annotations

import torch
from torch import nn

from suan_kernels import time_bucket

from .batch import Batch, TokenLayout
from .config import ModelConfig
from .nn import GlobalBatchNorm1d


class DenseFeatures(nn.Module):
    """Missing values (exactly 0) get a learned imputation, then BatchNorm, then tanh. ``[B, D]``."""

    def __init__(self, num_dense: int):
        super().__init__()
        self.num_dense = num_dense
        if num_dense:
            self.impute = nn.Parameter(torch.zeros(num_dense))
            self.norm = GlobalBatchNorm1d(num_dense)

    def forward(self, dense: torch.Tensor) -> torch.Tensor:
        if self.num_dense == 0:
            return dense.new_zeros(dense.shape[0], 0)
        x = torch.where(dense == 0, self.impute.to(dense.dtype), dense)
        return torch.tanh(self.norm(x))


class FieldEmbeddings(nn.Module):
    """Turns a ``Batch`` into the token stream ``[T, d_model]`` and feature tokens ``[B, F, d_model]``.

    * behavior token = concat of its fields' embeddings (``d_model = embed_dim * fields``);
    * target token = concat of its fields' embeddings (tables shared with behaviors), zero-padded;
    * a learned absolute position embedding (behavior j -> j, every target -> n) and a projected
      time embedding of ``log2(request_ts - ts)`` are added to every token;
    * every feature field is one token of width d_model.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        s = cfg.schema
        self.cfg = cfg
        self.d_model = cfg.d_model
        self.tables = nn.ModuleList([nn.Embedding(f.vocab_size, cfg.embed_dim, padding_idx=0)
                                     for f in s.behavior_fields])
        self.target_index = s.target_field_index()
        self.features = nn.ModuleList([nn.Embedding(f.vocab_size, cfg.d_model) for f in s.feature_fields])
        self.position = nn.Embedding(cfg.max_len + 1, cfg.d_model)
        self.num_time_buckets = cfg.num_time_buckets
        self.time_table = nn.Embedding(cfg.num_time_buckets + 1, cfg.embed_dim)
        self.time_proj = nn.Linear(cfg.embed_dim, cfg.d_model, bias=False)
        for emb in list(self.tables) + list(self.features) + [self.position, self.time_table]:
            nn.init.normal_(emb.weight, std=0.05)
            if emb.padding_idx is not None:
                with torch.no_grad():
                    emb.weight[emb.padding_idx].zero_()

    def behavior_tokens(self, fields: torch.Tensor) -> torch.Tensor:
        """``[Nb, Fb]`` ids -> ``[Nb, d_model]``."""
        return torch.cat([tab(fields[:, i]) for i, tab in enumerate(self.tables)], dim=-1)

    def target_tokens(self, fields: torch.Tensor) -> torch.Tensor:
        """``[Nt, Ft]`` ids -> ``[Nt, d_model]`` (zero-padded concat)."""
        parts = [self.tables[ti](fields[:, i]) for i, ti in enumerate(self.target_index)]
        x = torch.cat(parts, dim=-1)
        pad = self.d_model - x.shape[-1]
        return nn.functional.pad(x, (0, pad)) if pad else x

    def feature_tokens(self, features: torch.Tensor) -> torch.Tensor:
        """``[B, F]`` ids -> ``[B, F, d_model]``."""
        if not len(self.features):
            return features.new_zeros(features.shape[0], 0, self.d_model, dtype=torch.float32)
        return torch.stack([emb(features[:, i]) for i, emb in enumerate(self.features)], dim=1)

    def candidate_tokens(self, fields: torch.Tensor, num_behaviors: int) -> torch.Tensor:
        """Tokens of K candidates of one sample with n behaviors: position n, age 0. ``[K, d]``."""
        pos = torch.full((fields.shape[0],), min(num_behaviors, self.cfg.max_len), dtype=torch.long,
                         device=fields.device)
        age0 = torch.zeros_like(pos)
        return self.target_tokens(fields) + self.position(pos) + self.time_proj(self.time_table(age0))

    def forward(self, batch: Batch, layout: TokenLayout) -> torch.Tensor:
        """The token stream ``[T, d_model]`` in layout order."""
        beh = self.behavior_tokens(batch.behaviors)
        tgt = self.target_tokens(batch.targets)
        x = beh.new_zeros(layout.total, self.d_model)
        x = x.index_copy(0, layout.behavior_rows, beh).index_copy(0, layout.target_rows, tgt)
        pos = layout.positions.clamp(max=self.cfg.max_len)
        age = (batch.request_ts[layout.seq_index] - layout.timestamps).clamp(min=0)
        tb = time_bucket(age, self.num_time_buckets)
        return x + self.position(pos) + self.time_proj(self.time_table(tb))
