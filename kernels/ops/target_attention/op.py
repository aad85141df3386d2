"""Candidates attending to a cached behavior history (serving path of LightSUAN / SUAN).

Under the masks of SPEC section 7 a candidate (target) row sees every behavior of its sequence
and itself, never another candidate, at position n (the behavior count). Once a history's
per-layer keys and values are cached, K candidates cost O(K * n) per layer:

    s_tj   = q_t . k_j * scale + w_pos[clamp(n - j) + P - 1] + w_time[bucket(|ts_t - ts_j|)]
    s_tt   = q_t . k_t * scale + w_pos[P - 1] + w_time[0]
    out_t  = softmax over {s_tj}_j U {s_tt} applied to {v_j} U {v_t}

This equals the candidate rows of ``unified_attention`` on ``[behaviors, candidates]``.
Plain PyTorch (batched GEMMs), which is also its own reference; candidates are processed in
chunks so memory stays O(chunk * n).
"""
from __future__ import annotations

from typing import Optional

import torch

from ..unified_attention.bias import position_index, time_bucket


def target_bias(n: int, ts_beh: Optional[torch.Tensor] = None, ts: Optional[torch.Tensor] = None,
                w_pos: Optional[torch.Tensor] = None, w_time: Optional[torch.Tensor] = None, *, num_buckets: int = 128,
                num_candidates: int = 1, dtype=torch.float32, device=None):
    """The bias terms of K candidates against n behaviors: ``([K or 1, n] behaviors, scalar self)``.

    They depend on the history and the bias tables only, so every layer of a model (the tables
    are shared) can reuse them: compute once per request, pass as ``bias=`` to each layer.
    """
    device = device if device is not None else (w_pos.device if w_pos is not None else None)
    bias_b = torch.zeros(1, n, dtype=dtype, device=device)
    self_bias = torch.zeros((), dtype=dtype, device=device)
    if w_pos is not None:
        P = (w_pos.numel() + 1) // 2
        rel = n - torch.arange(n, device=device)
        bias_b = bias_b + w_pos.to(dtype)[position_index(rel, P)]
        self_bias = self_bias + w_pos.to(dtype)[P - 1]
    if w_time is not None and ts is not None and ts_beh is not None:
        self_bias = self_bias + w_time.to(dtype)[0]
        ts = torch.as_tensor(ts, device=device)
        ts = ts.expand(num_candidates) if ts.dim() == 0 else ts
        if bool((ts == ts[0]).all()):  # one request time: one row serves every candidate
            ts = ts[:1]
        dt = (ts[:, None] - ts_beh[None, :]).abs()
        bias_b = bias_b + w_time.to(dtype)[time_bucket(dt, num_buckets)]
    return bias_b, self_bias


def target_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, k_beh: torch.Tensor, v_beh: torch.Tensor,
                     ts_beh: Optional[torch.Tensor] = None, ts: Optional[torch.Tensor] = None,
                     w_pos: Optional[torch.Tensor] = None, w_time: Optional[torch.Tensor] = None, *,
                     num_buckets: int = 128, scale: Optional[float] = None, chunk: int = 512,
                     bias=None) -> torch.Tensor:
    """Args:
        q, k: ``[K, H, dh]`` and v ``[K, H, dv]``: the candidates' own projections.
        k_beh ``[n, H, dh]``, v_beh ``[n, H, dv]``: the cached behavior keys and values.
        ts_beh ``[n]`` and ts (scalar or ``[K]``): timestamps for the time bias.
        bias: the output of ``target_bias`` (computed here when None).
    Returns ``[K, H, dv]`` in q's dtype (computed in float32, float64 for float64 inputs).
    """
    if q.dim() != 3 or k.shape != q.shape or v.shape[:2] != q.shape[:2]:
        raise ValueError(f"q, k, v: expected [K, H, d] with matching K and H, got {tuple(q.shape)}, "
                         f"{tuple(k.shape)}, {tuple(v.shape)}")
    if k_beh.dim() != 3 or k_beh.shape[1:] != q.shape[1:] or v_beh.shape[:2] != k_beh.shape[:2] \
            or v_beh.shape[2] != v.shape[2]:
        raise ValueError(f"k_beh, v_beh: expected [n, H, dh] / [n, H, dv] matching q and v, got "
                         f"{tuple(k_beh.shape)}, {tuple(v_beh.shape)}")
    K, H, dh = q.shape
    n = k_beh.shape[0]
    scale = dh ** -0.5 if scale is None else scale
    cdt = torch.float64 if q.dtype == torch.float64 else torch.float32
    if bias is None:
        bias = target_bias(n, ts_beh, ts, w_pos, w_time, num_buckets=num_buckets, num_candidates=K, dtype=cdt,
                           device=q.device)
    bias_b, self_bias = bias
    if bias_b.shape[-1] != n or bias_b.shape[0] not in (1, K):
        raise ValueError(f"bias: behavior bias of shape {tuple(bias_b.shape)} does not fit K={K}, n={n}")
    kb = k_beh.to(cdt).permute(1, 2, 0)  # [H, dh, n]
    vb = v_beh.to(cdt).transpose(0, 1)  # [H, n, dv]
    outs = []
    for c0 in range(0, K, chunk):
        qc = q[c0:c0 + chunk].to(cdt).transpose(0, 1)  # [H, k, dh]
        bb = bias_b if bias_b.shape[0] == 1 else bias_b[c0:c0 + chunk]
        scores = torch.matmul(qc, kb).mul_(scale).add_(bb)  # [H, k, n]
        self_score = (q[c0:c0 + chunk].to(cdt) * k[c0:c0 + chunk].to(cdt)).sum(-1).mul_(scale).add_(self_bias)
        probs = torch.softmax(torch.cat([scores, self_score.t().unsqueeze(-1)], dim=-1), dim=-1)
        out = torch.matmul(probs[..., :n], vb) + probs[..., n:] * v[c0:c0 + chunk].to(cdt).transpose(0, 1)
        outs.append(out.transpose(0, 1))
    if not outs:
        return q.new_empty((0, H, v.shape[2]))
    return torch.cat(outs).to(q.dtype)
