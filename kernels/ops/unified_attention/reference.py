"""Pure-PyTorch reference of ``unified_attention`` (SPEC section 7).

This is the correctness oracle of the Triton kernels and the CPU execution path of the models.
It never builds a [T, T] matrix across sequences:

* sequences are grouped by (behavior count, target count) rounded up to powers of two and padded
  within a group only, so memory grows with the sum of squared lengths (at most 4x), not T^2;
* behaviors attend to behaviors with a [n, n] score block per sequence (dense pattern) or, with a
  ``window`` / ``dilation`` / ``num_global`` pattern, with banded pieces whose size grows with the
  allowed pairs: a sliding band of width ~2W, a causal block per residue class ``i mod r``
  (L^2 / r pairs) and the G global columns;
* targets attend to the behaviors of their sequence plus themselves: a [K, n] block and a
  diagonal, never [K, K].

A call is split in a *plan* (index tensors and additive bias + mask tensors, which depend only
on offsets, timestamps, num_targets, the pattern and the bias tables) and its application to
q, k, v. Inside ``with reuse_bias():`` plans are shared by every call with the same inputs (all
layers of one model forward share them); outside, each call builds its own.

All arithmetic runs in float32 (float64 for float64 inputs); the output is cast to q's dtype.
"""
from __future__ import annotations

import contextlib
import contextvars
from collections import defaultdict
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F

from .bias import position_term, time_term
from .call import AttentionCall
from .pattern import DENSE, AttentionPattern

NEG_INF = float("-inf")
# Largest score tensor (elements) built for one chunk of a group; bounds peak memory.
_CHUNK_ELEMENTS = 1 << 25
# The band of a sliding window is processed in chunks of at least this many rows.
_MIN_BAND_CHUNK = 32


# ----------------------------------------------------------------------------------------------
# Reuse of plans across calls (one model forward)
# ----------------------------------------------------------------------------------------------
_SCOPE: contextvars.ContextVar = contextvars.ContextVar("suan_reference_plans", default=None)


@contextlib.contextmanager
def reuse_bias():
    """Share the reference's bias/mask plans between calls with identical structure inputs.

    Use it around one model forward: every layer calls the op with the same offsets,
    timestamps, num_targets and bias tables, so the [n, n] bias is built once, not per layer.
    The scope never outlives the block, so no autograd graph is reused across forwards.
    """
    token = _SCOPE.set({})
    try:
        yield
    finally:
        _SCOPE.reset(token)


def _tensor_key(t: Optional[torch.Tensor]):
    return None if t is None else (id(t), t._version)


# ----------------------------------------------------------------------------------------------
# Plans
# ----------------------------------------------------------------------------------------------
@dataclass
class _Bias:
    """The relative-attention-bias terms of one call (any of them may be absent)."""

    w_pos: Optional[torch.Tensor]
    w_time: Optional[torch.Tensor]
    num_buckets: int

    def pos(self, rel: torch.Tensor) -> Optional[torch.Tensor]:
        return position_term(self.w_pos, rel)

    def time(self, ts_i, ts_j) -> Optional[torch.Tensor]:
        return time_term(self.w_time, ts_i, ts_j, self.num_buckets)

    def additive(self, allowed: torch.Tensor, rel: torch.Tensor, ts_i, ts_j, dtype) -> torch.Tensor:
        """pos + time bias with -inf where not allowed; broadcast of all inputs, in ``dtype``."""
        out = torch.zeros((), dtype=dtype, device=allowed.device)
        for term in (self.pos(rel), self.time(ts_i, ts_j)):
            if term is not None:
                out = out + term
        return out.masked_fill(~allowed, NEG_INF)


def banded_pays(pattern: AttentionPattern, N: int) -> bool:
    """Use the banded pieces only when the pattern really removes pairs (N behaviors)."""
    if not pattern.sparse or N <= _MIN_BAND_CHUNK:
        return False
    if pattern.effective(N) is DENSE:
        return False
    cost = 0
    if pattern.window is not None:
        cost += 2 * max(pattern.window, _MIN_BAND_CHUNK) * N
    if pattern.dilation is not None:
        cost += N * N // pattern.dilation
    cost += min(pattern.num_global, N) * N
    return cost < N * N // 2


@dataclass
class _Piece:
    """One disjoint part of the behavior->behavior pairs: its geometry and additive bias."""

    kind: str  # "dense" | "band" | "classes" | "global"
    bias: torch.Tensor  # [G, 1, ...rows layout..., keys]
    size: int = 0  # band chunk C, dilation r, or global count


@dataclass
class _GroupPlan:
    N: int
    K: int
    rows_b: Optional[torch.Tensor] = None  # [G, N] (pads clamped to a real row)
    valid_b: Optional[torch.Tensor] = None
    rows_t: Optional[torch.Tensor] = None  # [G, K]
    valid_t: Optional[torch.Tensor] = None
    pieces: List[_Piece] = field(default_factory=list)
    keep_b: Optional[torch.Tensor] = None  # flat indices of the valid rows of rows_b
    keep_t: Optional[torch.Tensor] = None
    target_bias: Optional[torch.Tensor] = None  # [G, 1, K, N]
    self_bias: Optional[torch.Tensor] = None  # scalar


def _plan_dense(N, n, tsb, bias: _Bias, pattern: AttentionPattern, dtype) -> _Piece:
    idx = torch.arange(N, device=n.device)
    i, j = idx[:, None], idx[None, :]
    valid_i = i[None] < n[:, None, None]
    allowed = pattern.allows(i, j)[None] & (j[None] < n[:, None, None])
    allowed = allowed | ((i == j)[None] & ~valid_i)  # padded rows keep a diagonal: never empty
    ts_i = None if tsb is None else tsb[:, :, None]
    ts_j = None if tsb is None else tsb[:, None, :]
    return _Piece("dense", bias.additive(allowed, i - j, ts_i, ts_j, dtype).unsqueeze(1))


def _plan_band(N, n, tsb, bias: _Bias, pattern: AttentionPattern, dtype) -> _Piece:
    W = pattern.window
    C = max(min(W, N), _MIN_BAND_CHUNK)
    nC = -(-N // C)
    Lc = nC * C
    device = n.device
    a, s, c = torch.arange(C, device=device), torch.arange(2 * C, device=device), torch.arange(nC, device=device)
    i = (c[:, None] * C + a[None, :])[:, :, None]  # [nC, C, 1]
    j = (c[:, None] * C - C + s[None, :])[:, None, :]  # [nC, 1, 2C]
    rel = i - j
    valid_i = i[None] < n[:, None, None, None]
    allowed = ((rel >= 0) & (rel < W))[None] & (j[None] >= 0) & (j[None] < n[:, None, None, None])
    allowed = allowed | ((rel == 0)[None] & ~valid_i)
    ts_i = ts_j = None
    if tsb is not None:
        ts_i = F.pad(tsb, (0, Lc - N)).unflatten(1, (nC, C))[..., :, None]
        ts_j = F.pad(tsb, (C, Lc - N)).unfold(1, 2 * C, C)[..., None, :]
    return _Piece("band", bias.additive(allowed, rel, ts_i, ts_j, dtype).unsqueeze(1), C)


def _plan_classes(N, n, tsb, bias: _Bias, pattern: AttentionPattern, dtype, owns_diagonal: bool) -> _Piece:
    r = pattern.dilation
    m = -(-N // r)
    device = n.device
    cls = torch.arange(r, device=device)[:, None, None]
    i = torch.arange(m, device=device)[None, :, None] * r + cls  # [r, m, 1]
    j = torch.arange(m, device=device)[None, None, :] * r + cls  # [r, 1, m]
    rel = i - j
    allowed = ((rel >= 0) & ~pattern.in_window(rel))[None] & (j[None] < n[:, None, None, None])
    if owns_diagonal:
        allowed = allowed | ((rel == 0)[None] & ~(i[None] < n[:, None, None, None]))
    ts_i = ts_j = None
    if tsb is not None:
        tr = F.pad(tsb, (0, m * r - N)).unflatten(1, (m, r)).transpose(1, 2)  # [G, r, m]
        ts_i, ts_j = tr[..., :, None], tr[..., None, :]
    return _Piece("classes", bias.additive(allowed, rel, ts_i, ts_j, dtype).unsqueeze(1), r)


def _plan_global(N, n, tsb, bias: _Bias, pattern: AttentionPattern, dtype) -> Optional[_Piece]:
    Gk = min(pattern.num_global, N)
    if Gk == 0:
        return None
    device = n.device
    i = torch.arange(N, device=device)[:, None]
    j = torch.arange(Gk, device=device)[None, :]
    rel = i - j
    allowed = ((rel >= 0) & ~pattern.in_window(rel) & ~pattern.in_dilation(rel))[None] & (j[None] < n[:, None, None])
    ts_i = None if tsb is None else tsb[:, :, None]
    ts_j = None if tsb is None else tsb[:, None, :Gk]
    return _Piece("global", bias.additive(allowed, rel, ts_i, ts_j, dtype).unsqueeze(1), Gk)


def _plan_group(starts, n, nt, N, K, ts, bias: _Bias, pattern: AttentionPattern, dtype) -> _GroupPlan:
    plan = _GroupPlan(N, K)
    device = starts.device
    tsb = None
    if N > 0:
        pos = torch.arange(N, device=device)
        plan.valid_b = pos[None, :] < n[:, None]
        plan.rows_b = torch.where(plan.valid_b, starts[:, None] + pos[None, :], starts[:, None])
        plan.keep_b = plan.valid_b.reshape(-1).nonzero().squeeze(1)
        tsb = None if ts is None else ts[plan.rows_b]
        if banded_pays(pattern, N):
            if pattern.window is not None:
                plan.pieces.append(_plan_band(N, n, tsb, bias, pattern, dtype))
            if pattern.dilation is not None:
                plan.pieces.append(_plan_classes(N, n, tsb, bias, pattern, dtype, pattern.window is None))
            g = _plan_global(N, n, tsb, bias, pattern, dtype)
            if g is not None:
                plan.pieces.append(g)
        else:
            plan.pieces.append(_plan_dense(N, n, tsb, bias, pattern, dtype))
    if K > 0:
        pos = torch.arange(K, device=device)
        plan.valid_t = pos[None, :] < nt[:, None]
        plan.rows_t = torch.where(plan.valid_t, starts[:, None] + n[:, None] + pos[None, :], starts[:, None])
        plan.keep_t = plan.valid_t.reshape(-1).nonzero().squeeze(1)
        zero = torch.zeros((), dtype=torch.int64, device=device)
        tst = None if ts is None else ts[plan.rows_t]
        if N > 0:
            j = torch.arange(N, device=device)
            allowed = (j[None, :] < n[:, None])[:, None, :]  # [G, 1, N]
            rel = n[:, None, None] - j[None, None, :]  # targets sit at position n
            plan.target_bias = bias.additive(
                allowed, rel, None if tst is None else tst[:, :, None], None if tsb is None else tsb[:, None, :], dtype
            ).unsqueeze(1)  # [G, 1, K or 1, N]
        plan.self_bias = bias.additive(torch.ones((), dtype=torch.bool, device=device), zero,
                                       None if ts is None else zero, None if ts is None else zero, dtype)
    return plan


# ----------------------------------------------------------------------------------------------
# Application to q, k, v
# ----------------------------------------------------------------------------------------------
def _to_rows(piece: _Piece, x: torch.Tensor, N: int) -> torch.Tensor:
    """Piece layout (last dims = rows) -> [..., N]."""
    if piece.kind == "band":
        return x.flatten(-2)[..., :N]
    if piece.kind == "classes":
        return x.transpose(-1, -2).flatten(-2)[..., :N]
    return x


def _from_rows(piece: _Piece, x: torch.Tensor, N: int) -> torch.Tensor:
    """[..., N] -> piece layout (inverse of ``_to_rows``, pads with 0)."""
    if piece.kind == "band":
        C = piece.size
        nC = -(-N // C)
        return F.pad(x, (0, nC * C - N)).unflatten(-1, (nC, C))
    if piece.kind == "classes":
        r = piece.size
        m = -(-N // r)
        return F.pad(x, (0, m * r - N)).unflatten(-1, (m, r)).transpose(-1, -2)
    return x


def _piece_qkv(piece: _Piece, q, k, v):
    """Reshape [G,H,N,*] tensors into the piece's (queries, keys^T, values) layout."""
    N = q.shape[2]
    if piece.kind == "band":
        C = piece.size
        nC = -(-N // C)
        Lc = nC * C
        qc = F.pad(q, (0, 0, 0, Lc - N)).unflatten(2, (nC, C))  # [G,H,nC,C,dh]
        kt = F.pad(k, (0, 0, C, Lc - N)).unfold(2, 2 * C, C)  # [G,H,nC,dh,2C]
        vc = F.pad(v, (0, 0, C, Lc - N)).unfold(2, 2 * C, C).transpose(-1, -2)  # [G,H,nC,2C,dv]
        return qc, kt, vc
    if piece.kind == "classes":
        r = piece.size
        m = -(-N // r)
        def cls(x):
            return F.pad(x, (0, 0, 0, m * r - N)).unflatten(2, (m, r)).transpose(2, 3)  # [G,H,r,m,d]
        return cls(q), cls(k).transpose(-1, -2), cls(v)
    if piece.kind == "global":
        Gk = piece.size
        return q, k[:, :, :Gk].transpose(-1, -2), v[:, :, :Gk]
    return q, k.transpose(-1, -2), v


def _behavior_attention(plan: _GroupPlan, q, k, v, scale: float, want_lse: bool = False):
    """q/k: [G,H,N,dh], v: [G,H,N,dv] -> ([G,H,N,dv], log-sum-exp [G,H,N] or None)."""
    N = q.shape[2]
    if len(plan.pieces) == 1 and plan.pieces[0].kind == "dense":
        scores = torch.matmul(q, k.transpose(-1, -2)).mul_(scale).add_(plan.pieces[0].bias)
        lse = torch.logsumexp(scores, dim=-1) if want_lse else None
        return torch.matmul(torch.softmax(scores, dim=-1), v), lse
    scored = []
    row_max = None
    for piece in plan.pieces:
        qp, ktp, vp = _piece_qkv(piece, q, k, v)
        scores = torch.matmul(qp, ktp).mul_(scale).add_(piece.bias)
        m = _to_rows(piece, scores.amax(dim=-1), N).detach()  # softmax is shift-invariant
        row_max = m if row_max is None else torch.maximum(row_max, m)
        scored.append((piece, scores, vp))
    num = den = None
    for piece, scores, vp in scored:
        e = torch.exp(scores - _from_rows(piece, row_max, N).unsqueeze(-1))
        part = _to_rows(piece, torch.matmul(e, vp).movedim(-1, 0), N).movedim(0, -1)
        d = _to_rows(piece, e.sum(dim=-1), N)
        num = part if num is None else num + part
        den = d if den is None else den + d
    return num / den.unsqueeze(-1), (row_max + torch.log(den) if want_lse else None)


def _target_attention(plan: _GroupPlan, qt, kt, vt, kb, vb, scale: float, want_lse: bool = False):
    """qt/kt: [G,H,K,dh], vt: [G,H,K,dv], kb/vb: behaviors [G,H,N,*] -> ([G,H,K,dv], lse [G,H,K] or None)."""
    self_score = (qt * kt).sum(-1).mul_(scale).add_(plan.self_bias)  # [G,H,K]
    if plan.N == 0:  # no behaviors anywhere in the group: each target sees only itself
        return vt, (self_score if want_lse else None)
    scores = torch.matmul(qt, kb.transpose(-1, -2)).mul_(scale).add_(plan.target_bias)  # [G,H,K,N]
    scores = torch.cat([scores, self_score.unsqueeze(-1)], dim=-1)
    probs = torch.softmax(scores, dim=-1)
    lse = torch.logsumexp(scores, dim=-1) if want_lse else None
    return torch.matmul(probs[..., : plan.N], vb) + probs[..., plan.N:] * vt, lse


# ----------------------------------------------------------------------------------------------
# Driver
# ----------------------------------------------------------------------------------------------
def _bucket(x: int) -> int:
    return 0 if x == 0 else (x - 1).bit_length() + 1


# One padded group for the whole batch when its score blocks hold at most this many elements
# more than the bucketed groups would: short sequences (CTR histories of tens of tokens) then
# take one batched matmul per step instead of one per group, whose overhead dominates.
_ONE_GROUP_SLACK = 1 << 16


def _group_cost(n_list: List[int], nt_list: List[int]) -> int:
    """Score elements (per head) of one padded group of these sequences."""
    N, K = max(n_list), max(nt_list)
    return len(n_list) * (N * N + K * (N + 1))


def _plan_groups(lengths: List[int], nts: List[int]) -> List[List[int]]:
    """Sequences grouped by (behavior count, target count) rounded up to powers of two, or one
    group when padding everything to the longest costs little (``_ONE_GROUP_SLACK``)."""
    groups = defaultdict(list)
    for b, (length, nt) in enumerate(zip(lengths, nts)):
        if length == 0:
            continue
        groups[(_bucket(length - nt), _bucket(nt))].append(b)
    bucketed = [groups[key] for key in sorted(groups)]
    members = [b for g in bucketed for b in g]
    if len(bucketed) > 1:
        n_of = [lengths[b] - nts[b] for b in members]
        nt_of = [nts[b] for b in members]
        split_cost = sum(_group_cost([lengths[b] - nts[b] for b in g], [nts[b] for b in g]) for g in bucketed)
        if _group_cost(n_of, nt_of) <= 2 * split_cost + _ONE_GROUP_SLACK:
            return [sorted(members)]
    return bucketed


def _build_plans(offsets, timestamps, w_pos, w_time, num_buckets, pattern, lengths, nts, H, dtype):
    device = offsets.device
    bias = _Bias(None if w_pos is None else w_pos.to(dtype),
                 None if w_time is None or timestamps is None else w_time.to(dtype), num_buckets)
    ts = timestamps if bias.w_time is not None else None
    if ts is not None and ts.dtype.is_floating_point:
        ts = ts.to(torch.float64)
    starts_all = offsets[:-1].tolist()
    plans = []
    for members in _plan_groups(lengths, nts):
        n_list = [lengths[b] - nts[b] for b in members]
        nt_list = [nts[b] for b in members]
        N, K = max(n_list), max(nt_list)
        per_seq = H * (N * N + K * (N + 1)) + 1
        step = max(1, _CHUNK_ELEMENTS // per_seq)
        for c0 in range(0, len(members), step):
            sub = members[c0 : c0 + step]
            starts = torch.tensor([starts_all[b] for b in sub], device=device, dtype=torch.int64)
            n = torch.tensor(n_list[c0 : c0 + step], device=device, dtype=torch.int64)
            nt = torch.tensor(nt_list[c0 : c0 + step], device=device, dtype=torch.int64)
            plans.append(_plan_group(starts, n, nt, N, K, ts, bias, pattern, dtype))
    return plans


def _gather_rows(x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """x: [T, H, d], rows: [G, N] -> [G, H, N, d] (index_select: its backward is a fast index_add)."""
    return torch.index_select(x, 0, rows.reshape(-1)).view(*rows.shape, *x.shape[1:]).permute(0, 2, 1, 3)


def unified_attention_reference(call: AttentionCall, lengths: List[int], nts: List[int],
                                compute_dtype: Optional[torch.dtype] = None, return_lse: bool = False):
    """Reference forward; differentiable in q, k, v, w_pos, w_time through autograd.

    ``lengths``/``nts`` are the per-sequence token and target counts (already validated).
    ``compute_dtype`` (tests) overrides the float32 / float64 arithmetic, e.g. to measure what a
    plain PyTorch implementation in half precision loses. ``return_lse`` also returns each row's
    log-sum-exp of its allowed scores, ``[T, H]`` in the compute dtype (differentiable).
    """
    q, k, v = call.q, call.k, call.v
    T, H, _ = q.shape
    dv = v.shape[2]
    scale = call.resolved_scale
    cdt = compute_dtype or (torch.float64 if q.dtype == torch.float64 else torch.float32)
    structure = (call.offsets, call.timestamps, call.num_targets, call.w_pos, call.w_time)

    scope = _SCOPE.get()
    key = None
    if scope is not None:
        key = (tuple(_tensor_key(t) for t in structure), call.num_buckets, call.pattern, H, cdt,
               torch.is_grad_enabled())
    plans = None if key is None else scope.get(key, (None,))[0]
    if plans is None:
        plans = _build_plans(call.offsets, call.timestamps, call.w_pos, call.w_time, call.num_buckets, call.pattern,
                             lengths, nts, H, cdt)
        if key is not None:  # keep the key tensors alive so their ids cannot be reused
            scope[key] = (plans, structure)

    qc, kc, vc = q.to(cdt), k.to(cdt), v.to(cdt)
    rows_out, vals_out, lse_out = [], [], []

    def keep(rows, keep_idx, o, lse):
        rows_out.append(rows.reshape(-1).index_select(0, keep_idx))
        vals_out.append(o.permute(0, 2, 1, 3).reshape(-1, H, dv).index_select(0, keep_idx))
        if lse is not None:
            lse_out.append(lse.permute(0, 2, 1).reshape(-1, H).index_select(0, keep_idx))

    for plan in plans:
        kb = vb = None
        if plan.N > 0:
            qb, kb, vb = (_gather_rows(x, plan.rows_b) for x in (qc, kc, vc))
            keep(plan.rows_b, plan.keep_b, *_behavior_attention(plan, qb, kb, vb, scale, return_lse))
        if plan.K > 0:
            qt, kt, vt = (_gather_rows(x, plan.rows_t) for x in (qc, kc, vc))
            keep(plan.rows_t, plan.keep_t, *_target_attention(plan, qt, kt, vt, kb, vb, scale, return_lse))
    out = torch.zeros((T, H, dv), dtype=cdt, device=q.device)
    lse = torch.full((T, H), NEG_INF, dtype=cdt, device=q.device)
    if rows_out:
        rows = torch.cat(rows_out)
        out = out.index_copy(0, rows, torch.cat(vals_out))
        if return_lse:
            lse = lse.index_copy(0, rows, torch.cat(lse_out))
    return (out.to(q.dtype), lse) if return_lse else out.to(q.dtype)
