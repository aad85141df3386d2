"""Jagged CTR batches (SPEC section 2) and the token layout the models derive from them."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import List, Optional, Sequence

import numpy as np
import torch


@dataclass
class Batch:
    """B samples, behaviors and candidates laid end to end (no padding to a global maximum).

    Attributes:
        behaviors: int64 ``[Nb, Fb]`` categorical fields of every behavior, oldest first per sample.
        behavior_ts: int64 ``[Nb]`` behavior timestamps (seconds).
        behavior_offsets: int64 ``[B+1]``; sample b owns behaviors ``offsets[b]:offsets[b+1]``.
        targets: int64 ``[Nt, Ft]`` candidate fields (``Schema.target_fields``).
        target_offsets: int64 ``[B+1]``; one candidate per sample in training, K when serving.
        request_ts: int64 ``[B]`` request time (the candidates' timestamp).
        features: int64 ``[B, F]`` user-profile / context fields.
        dense: float32 ``[B, D]`` dense features (0 = missing).
        labels: float32 ``[Nt]`` clicks, optional.
        user_ids: int64 ``[B]`` for GAUC, optional.
    """

    behaviors: torch.Tensor
    behavior_ts: torch.Tensor
    behavior_offsets: torch.Tensor
    targets: torch.Tensor
    target_offsets: torch.Tensor
    request_ts: torch.Tensor
    features: torch.Tensor
    dense: torch.Tensor
    labels: Optional[torch.Tensor] = None
    user_ids: Optional[torch.Tensor] = None

    @property
    def num_samples(self) -> int:
        return self.behavior_offsets.numel() - 1

    @property
    def num_candidates(self) -> int:
        return self.targets.shape[0]

    def to(self, device, non_blocking: bool = False) -> "Batch":
        return Batch(**{f.name: (None if getattr(self, f.name) is None else
                                 getattr(self, f.name).to(device, non_blocking=non_blocking))
                        for f in dataclasses.fields(self)})

    def pin_memory(self) -> "Batch":
        return Batch(**{f.name: (None if getattr(self, f.name) is None else getattr(self, f.name).pin_memory())
                        for f in dataclasses.fields(self)})

    def truncate(self, max_len: int) -> "Batch":
        """The same batch with every history cut to its last ``max_len`` behaviors (no copy when
        nothing is longer)."""
        lens = self.behavior_offsets.diff()
        keep = lens.clamp(max=max_len)
        if bool((keep == lens).all()):
            return self
        new_offsets = torch.cat([self.behavior_offsets[:1] * 0, keep.cumsum(0)])
        total = int(new_offsets[-1])
        seq = torch.repeat_interleave(torch.arange(keep.numel(), device=keep.device), keep, output_size=total)
        src = self.behavior_offsets[1:].index_select(0, seq) - keep.index_select(0, seq) + \
            (torch.arange(total, device=keep.device) - new_offsets[:-1].index_select(0, seq))
        return dataclasses.replace(self, behaviors=self.behaviors.index_select(0, src),
                                   behavior_ts=self.behavior_ts.index_select(0, src), behavior_offsets=new_offsets)

    def target_sample_index(self) -> torch.Tensor:
        """Sample of every candidate, ``[Nt]``."""
        counts = self.target_offsets.diff()
        return torch.repeat_interleave(torch.arange(self.num_samples, device=counts.device), counts,
                                       output_size=self.num_candidates)

    def select(self, samples: Sequence[int]) -> "Batch":
        """A new batch with the given samples (host-side; used by tests and serving)."""
        return collate([self.sample(i) for i in samples])

    def sample(self, i: int) -> dict:
        bo, to = self.behavior_offsets.tolist(), self.target_offsets.tolist()
        return dict(
            behaviors=self.behaviors[bo[i]:bo[i + 1]],
            behavior_ts=self.behavior_ts[bo[i]:bo[i + 1]],
            targets=self.targets[to[i]:to[i + 1]],
            request_ts=self.request_ts[i],
            features=self.features[i],
            dense=self.dense[i],
            labels=None if self.labels is None else self.labels[to[i]:to[i + 1]],
            user_id=None if self.user_ids is None else self.user_ids[i],
        )


def _as_tensor(x, dtype):
    if isinstance(x, torch.Tensor):
        return x.to(dtype)
    return torch.as_tensor(np.asarray(x), dtype=dtype)


def collate(samples: List[dict]) -> Batch:
    """Build a jagged ``Batch`` from per-sample dicts.

    Each dict holds ``behaviors [n, Fb]``, ``behavior_ts [n]``, ``targets [K, Ft]`` (or ``[Ft]``),
    ``request_ts``, ``features [F]``, ``dense [D]`` and optionally ``labels [K]`` and ``user_id``.
    """
    if not samples:
        raise ValueError("samples: at least one sample is needed")
    beh = [_as_tensor(s["behaviors"], torch.int64) for s in samples]
    tgt = [_as_tensor(s["targets"], torch.int64) for s in samples]
    tgt = [t.unsqueeze(0) if t.dim() == 1 else t for t in tgt]
    widths = {b.shape[1] for b in beh if b.dim() == 2}
    if len(widths) > 1:
        raise ValueError(f"behaviors: samples disagree on the number of fields {sorted(widths)}")
    fb = widths.pop() if widths else 1
    beh = [b.reshape(-1, fb) for b in beh]
    n = torch.tensor([b.shape[0] for b in beh], dtype=torch.int64)
    k = torch.tensor([t.shape[0] for t in tgt], dtype=torch.int64)
    has_labels = all(s.get("labels") is not None for s in samples)
    has_users = all(s.get("user_id") is not None for s in samples)
    return Batch(
        behaviors=torch.cat(beh, 0),
        behavior_ts=torch.cat([_as_tensor(s["behavior_ts"], torch.int64).reshape(-1) for s in samples]),
        behavior_offsets=torch.cat([torch.zeros(1, dtype=torch.int64), n.cumsum(0)]),
        targets=torch.cat(tgt, 0),
        target_offsets=torch.cat([torch.zeros(1, dtype=torch.int64), k.cumsum(0)]),
        request_ts=torch.stack([_as_tensor(s["request_ts"], torch.int64).reshape(()) for s in samples]),
        features=torch.stack([_as_tensor(s["features"], torch.int64) for s in samples]),
        dense=torch.stack([_as_tensor(s["dense"], torch.float32) for s in samples]),
        labels=torch.cat([_as_tensor(s["labels"], torch.float32).reshape(-1) for s in samples]) if has_labels else None,
        user_ids=torch.stack([_as_tensor(s["user_id"], torch.int64).reshape(()) for s in samples]) if has_users else None,
    )


@dataclass
class TokenLayout:
    """Where every token of ``[b_1..b_n, t_1..t_K]`` per sample sits in the jagged stream.

    All tensors live on the batch's device; built without host syncs.
    """

    offsets: torch.Tensor  # [B+1] combined sequence offsets for the op
    num_behaviors: torch.Tensor  # [B]
    num_targets: torch.Tensor  # [B]
    seq_index: torch.Tensor  # [T] sample of every token
    positions: torch.Tensor  # [T] behavior j -> j, every target -> n
    is_behavior: torch.Tensor  # [T] bool
    behavior_rows: torch.Tensor  # [Nb] row of each behavior in the stream
    target_rows: torch.Tensor  # [Nt] row of each candidate in the stream
    target_seq: torch.Tensor  # [Nt] sample of each candidate
    timestamps: torch.Tensor  # [T]
    total: int

    @staticmethod
    def build(batch: Batch) -> "TokenLayout":
        device = batch.behaviors.device
        nb = batch.behavior_offsets.diff()
        nt = batch.target_offsets.diff()
        B = nb.numel()
        lengths = nb + nt
        offsets = torch.cat([torch.zeros(1, dtype=torch.int64, device=device), lengths.cumsum(0)])
        Nb, Nt = batch.behaviors.shape[0], batch.targets.shape[0]
        T = Nb + Nt
        ar_b = torch.arange(B, device=device)
        seq_index = torch.repeat_interleave(ar_b, lengths, output_size=T)
        local = torch.arange(T, device=device) - offsets[seq_index]
        is_behavior = local < nb[seq_index]
        positions = torch.where(is_behavior, local, nb[seq_index])
        beh_seq = torch.repeat_interleave(ar_b, nb, output_size=Nb)
        behavior_rows = offsets[beh_seq] + torch.arange(Nb, device=device) - batch.behavior_offsets[beh_seq]
        tgt_seq = torch.repeat_interleave(ar_b, nt, output_size=Nt)
        target_rows = offsets[tgt_seq] + nb[tgt_seq] + torch.arange(Nt, device=device) - batch.target_offsets[tgt_seq]
        timestamps = torch.empty(T, dtype=torch.int64, device=device)
        timestamps[behavior_rows] = batch.behavior_ts
        timestamps[target_rows] = batch.request_ts[tgt_seq]
        return TokenLayout(offsets, nb, nt, seq_index, positions, is_behavior, behavior_rows,
                           target_rows, tgt_seq, timestamps, T)


def random_batch(schema, batch_size: int, max_len: int, num_candidates: int = 1, *, min_len: int = 0,
                 seed: int = 0, device="cpu", labels: bool = True) -> Batch:
    """A random jagged batch following ``schema`` (tests, smoke runs and benchmarks).

    Lengths are uniform in ``[min_len, max_len]``; timestamps increase with realistic gaps.
    """
    g = torch.Generator().manual_seed(seed)
    n = torch.randint(min_len, max_len + 1, (batch_size,), generator=g)
    Nb = int(n.sum())
    beh = torch.stack([torch.randint(1, f.vocab_size, (Nb,), generator=g) for f in schema.behavior_fields], 1)
    tidx = schema.target_field_index()
    K = num_candidates
    tgt = torch.stack([torch.randint(1, schema.behavior_fields[i].vocab_size, (batch_size * K,), generator=g)
                       for i in tidx], 1)
    gaps = torch.exp(torch.randn(Nb, generator=g) * 2 + 6).long() + 1  # log-normal gaps (seconds)
    offs = torch.cat([torch.zeros(1, dtype=torch.int64), n.cumsum(0)])
    base = torch.randint(1_600_000_000, 1_700_000_000, (batch_size,), generator=g)
    ts = torch.empty(Nb, dtype=torch.int64)
    req = torch.empty(batch_size, dtype=torch.int64)
    for b in range(batch_size):
        s, e = int(offs[b]), int(offs[b + 1])
        c = gaps[s:e].cumsum(0)
        ts[s:e] = base[b] + c
        req[b] = base[b] + (int(c[-1]) if e > s else 0) + 30
    feats = torch.stack([torch.randint(1, f.vocab_size, (batch_size,), generator=g) for f in schema.feature_fields], 1) \
        if schema.feature_fields else torch.zeros(batch_size, 0, dtype=torch.int64)
    dense = torch.randn(batch_size, schema.num_dense, generator=g)
    dense[torch.rand(batch_size, schema.num_dense, generator=g) < 0.1] = 0.0
    return Batch(
        behaviors=beh, behavior_ts=ts, behavior_offsets=offs,
        targets=tgt, target_offsets=torch.arange(0, batch_size * K + 1, K, dtype=torch.int64),
        request_ts=req, features=feats, dense=dense,
        labels=(torch.rand(batch_size * K, generator=g) < 0.3).float() if labels else None,
        user_ids=torch.arange(batch_size, dtype=torch.int64),
    ).to(device)
