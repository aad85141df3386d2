"""SUAN and LightSUAN (SPEC sections 3-5)."""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Dict, Optional, Sequence

import torch
from torch import nn

from suan_kernels import RelativeAttentionBias, nvtx_range, reuse_bias, target_bias

from .batch import Batch, TokenLayout, collate
from .config import ModelConfig
from .embeddings import DenseFeatures, FieldEmbeddings
from .nn import GlobalBatchNorm1d
from .registry import register_model
from .uab import UnifiedAttentionBlock

if TYPE_CHECKING:  # pragma: no cover
    from .cache import BehaviorCache, EncodedHistory


class Dice(nn.Module):
    """Dice activation (DIN): ``p * x + (1 - p) * alpha * x`` with ``p = sigmoid(BN(x))``."""

    def __init__(self, dim: int):
        super().__init__()
        self.bn = GlobalBatchNorm1d(dim, affine=False)
        self.alpha = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = torch.sigmoid(self.bn(x))
        return p * x + (1 - p) * self.alpha * x


class PredictionHead(nn.Module):
    """MLP with BatchNorm + ReLU/Dice over ``concat(target token, feature tokens, dense)``."""

    def __init__(self, in_dim: int, hidden: Sequence[int], activation: str = "relu", dropout: float = 0.0):
        super().__init__()
        layers = []
        for h in hidden:
            layers += [nn.Linear(in_dim, h, bias=False), GlobalBatchNorm1d(h)]  # BN makes a bias redundant
            layers += [Dice(h) if activation == "dice" else nn.ReLU()]
            if dropout:
                layers.append(nn.Dropout(dropout))
            in_dim = h
        layers.append(nn.Linear(in_dim, 1))
        self.mlp = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x).squeeze(-1)


def count_parameters(model: nn.Module) -> Dict[str, int]:
    """Total, embedding (nn.Embedding tables) and non-embedding parameter counts."""
    emb = {id(p) for m in model.modules() if isinstance(m, nn.Embedding) for p in m.parameters()}
    total = nonemb = 0
    seen = set()
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        if id(p) not in emb:
            nonemb += p.numel()
    return {"total": total, "embedding": total - nonemb, "non_embedding": nonemb}


@register_model("suan", "SUAN: stacked unified attention blocks (dense self-attention)", family="suan")
class SUAN(nn.Module):
    """Stacked Unified Attention Network: field embeddings -> L UABs -> MLP head, one logit per target.

    ``forward(batch)`` returns float32 logits ``[Nt]`` (one per candidate, in batch order). Any
    number of candidates per sample is allowed: with target isolation and the behavior-only gate,
    K candidates in one pass score exactly as K one-candidate passes (in eval mode).
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embeddings = FieldEmbeddings(cfg)
        self.dense = DenseFeatures(cfg.schema.num_dense)
        # One relative-attention-bias table pair shared by every layer (SPEC section 3).
        self.rab = RelativeAttentionBias(cfg.max_len + 1, cfg.num_time_buckets, use_time=cfg.use_time_bias)
        self.blocks = nn.ModuleList([UnifiedAttentionBlock(cfg, self.rab) for _ in range(cfg.num_layers)])
        self.final_norm = nn.RMSNorm(cfg.d_model)
        head_in = cfg.d_model * (1 + cfg.schema.num_features) + cfg.schema.num_dense
        self.head = PredictionHead(head_in, cfg.head_hidden, cfg.head_activation)

    # -- building blocks shared with the behavior cache (suan.cache) --------------------------
    def encode_features(self, batch: Batch):
        feats = self.embeddings.feature_tokens(batch.features)  # [B, F, d]
        dense = self.dense(batch.dense)  # [B, D]
        return feats, dense

    def head_logits(self, target_tokens, feats, dense, target_seq) -> torch.Tensor:
        z = torch.cat([self.final_norm(target_tokens), feats.flatten(1).index_select(0, target_seq),
                       dense.index_select(0, target_seq)], dim=-1)
        return self.head(z)

    def forward(self, batch: Batch) -> torch.Tensor:
        # reuse_bias: every layer shares one bias/mask plan on the reference (CPU) path
        with nvtx_range(f"suan/{type(self).__name__}"), reuse_bias():
            batch = batch.truncate(self.cfg.max_len)  # a grade's L: the most recent behaviors
            layout = TokenLayout.build(batch)
            feats, dense = self.encode_features(batch)
            x = self.embeddings(batch, layout)
            for block in self.blocks:
                x = block(x, feats, layout)
            return self.head_logits(x.index_select(0, layout.target_rows), feats, dense, layout.target_seq).float()

    def parameter_counts(self) -> Dict[str, int]:
        return count_parameters(self)

    # -- serving -----------------------------------------------------------------------------
    def _device(self) -> torch.device:
        return next(self.parameters()).device

    @torch.no_grad()
    def score(self, history: dict, candidates: torch.Tensor, cache: Optional["BehaviorCache"] = None,
              key=None) -> torch.Tensor:
        """Scores K candidates ``[K, Ft]`` of one user in one pass; returns float32 logits ``[K]``.

        ``history`` holds ``behaviors [n, Fb]``, ``behavior_ts [n]``, ``request_ts``,
        ``features [F]`` and ``dense [D]`` (one sample of ``suan.batch.collate``). With a
        ``suan.cache.BehaviorCache`` the history is encoded once and later calls with the same
        history (by content) score against the cache in O(K * n) per layer; ``key`` only scopes
        the cache entry (e.g. a user id).
        """
        if cache is not None:
            return cache.score(history, candidates, scope=key)
        with _eval(self):
            sample = dict(history, targets=candidates)
            sample.pop("labels", None)
            return self(collate([sample]).to(self._device()))

    @torch.no_grad()
    def encode_history(self, history: dict) -> "EncodedHistory":
        """Runs the behaviors of one user through every layer once and keeps what candidates need."""
        from .cache import EncodedHistory, model_version

        with _eval(self), reuse_bias():
            sample = dict(history, targets=torch.zeros(0, len(self.cfg.schema.target_fields), dtype=torch.long))
            sample.pop("labels", None)
            batch = collate([sample]).to(self._device()).truncate(self.cfg.max_len)
            layout = TokenLayout.build(batch)
            feats, dense = self.encode_features(batch)
            x = self.embeddings(batch, layout)
            layers = []
            for block in self.blocks:
                x = block(x, feats, layout, capture=layers)
            return EncodedHistory(layers, feats, dense, batch.behavior_ts, batch.request_ts[0],
                                  int(batch.behaviors.shape[0]), model_version(self))

    @torch.no_grad()
    def score_encoded(self, enc: "EncodedHistory", candidates: torch.Tensor) -> torch.Tensor:
        """Logits ``[K]`` of candidates ``[K, Ft]`` against an encoded history."""
        with _eval(self):
            cands = torch.as_tensor(candidates, dtype=torch.long, device=self._device())
            x = self.embeddings.candidate_tokens(cands, enc.num_behaviors)
            # the relative bias is shared by every layer: build the [n] candidate bias once
            bias = target_bias(enc.num_behaviors, enc.behavior_ts, enc.request_ts, self.rab.w_pos, self.rab.w_time,
                               num_buckets=self.rab.num_buckets, num_candidates=x.shape[0], device=x.device)
            for block, layer in zip(self.blocks, enc.layers):
                x = block.forward_candidates(x, enc.feats, layer, enc.behavior_ts, enc.request_ts, bias=bias)
            zeros = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
            return self.head_logits(x, enc.feats, enc.dense, zeros).float()


class _eval:
    """Context: the model in eval mode, restored afterwards."""

    def __init__(self, model: nn.Module):
        self.model = model

    def __enter__(self):
        self.was_training = self.model.training
        self.model.eval()

    def __exit__(self, *exc):
        self.model.train(self.was_training)


def _light_config(cfg: ModelConfig, given: dict) -> ModelConfig:
    """LightSUAN's default pattern for the config's length where none is given (fields given
    explicitly, e.g. only ``num_global``, are kept)."""
    if cfg.sparse:
        return cfg
    from .config import light_pattern

    fields = ("window", "dilation", "num_global")
    return cfg.with_pattern(dataclasses.replace(light_pattern(cfg.max_len), **{k: given[k] for k in fields if k in given}))


@register_model("lightsuan", "LightSUAN: sparse self-attention (window / dilation / globals), one-pass scoring",
                family="suan", prepare=_light_config)
class LightSUAN(SUAN):
    """SUAN with sparse self-attention (window / dilation / global tokens) for serving.

    The pattern comes from ``cfg.window``, ``cfg.dilation`` and ``cfg.num_global``; on CUDA the
    op runs the block-sparse kernels, on CPU the banded reference. ``score()`` scores K
    candidates of one user in one pass, or against a ``BehaviorCache``.
    """

    def __init__(self, cfg: ModelConfig):
        if not cfg.sparse:
            raise ValueError("cfg: LightSUAN needs a sparse pattern (window and/or dilation); "
                             "see suan.config.light_pattern")
        super().__init__(cfg)
