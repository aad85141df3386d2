"""An explicit, loop-based dense implementation of SPEC section 7: the oracle of the tests.

Written independently of ``reference.py`` (and of ``bias.py`` / ``pattern.py``), so the tests
compare two implementations, not one with itself. Slow (Python loops over pairs): small inputs.
"""
import math

import torch


def bucket_of(dt: int, num_buckets: int) -> int:
    dt = max(int(dt), 1)
    return min(dt.bit_length() - 1, num_buckets)


def allowed_pair(i, j, n, window, dilation, num_global):
    """Row i may attend to key j (local indices) in a sequence with n behaviors."""
    if i >= n:  # target
        return j < n or j == i
    if j >= n:
        return False
    if j > i:
        return False
    if window is None and dilation is None:
        return True
    ok = False
    if window is not None and i - j < window:
        ok = True
    if dilation is not None and (i - j) % dilation == 0:
        ok = True
    if j < num_global:
        ok = True
    return ok


def dense_attention(q, k, v, offsets, timestamps=None, num_targets=None, w_pos=None, w_time=None,
                    num_buckets=128, window=None, dilation=None, num_global=0, scale=None):
    """float64 result, [T, H, dv]. Builds one full [L, L] score matrix per sequence."""
    T, H, dh = q.shape
    scale = dh ** -0.5 if scale is None else scale
    rows = []
    offs = offsets.tolist()
    nts = [0] * (len(offs) - 1) if num_targets is None else num_targets.tolist()
    P = None if w_pos is None else (w_pos.numel() + 1) // 2
    for b in range(len(offs) - 1):
        s, e = offs[b], offs[b + 1]
        L = e - s
        if L == 0:
            continue
        n = L - nts[b]
        qs, ks, vs = (x[s:e].double() for x in (q, k, v))
        scores = torch.einsum("ihd,jhd->hij", qs, ks) * scale
        pos_idx = torch.zeros(L, L, dtype=torch.long)
        bkt_idx = torch.zeros(L, L, dtype=torch.long)
        mask = torch.zeros(L, L, dtype=torch.bool)
        for i in range(L):
            pi = i if i < n else n
            for j in range(L):
                mask[i, j] = allowed_pair(i, j, n, window, dilation, num_global)
                pj = j if j < n else n
                if w_pos is not None:
                    pos_idx[i, j] = max(-(P - 1), min(P - 1, pi - pj)) + P - 1
                if w_time is not None and timestamps is not None:
                    dt = abs(timestamps[s + i].item() - timestamps[s + j].item())
                    if isinstance(dt, float):
                        dt = math.floor(dt) if dt >= 1 else 0
                    bkt_idx[i, j] = bucket_of(dt, num_buckets)
        bias = torch.zeros(L, L, dtype=torch.float64)
        if w_pos is not None:
            bias = bias + w_pos.double()[pos_idx]
        if w_time is not None and timestamps is not None:
            bias = bias + w_time.double()[bkt_idx]
        scores = scores + bias
        scores = scores.masked_fill(~mask, float("-inf"))
        p = torch.softmax(scores, dim=-1)
        rows.append(torch.einsum("hij,jhd->ihd", p, vs))
    if not rows:
        return torch.zeros(T, H, v.shape[-1], dtype=torch.float64)
    return torch.cat(rows)
