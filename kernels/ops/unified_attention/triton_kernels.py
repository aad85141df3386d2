"""Triton kernels of unified attention: one family for the dense and the block-sparse pattern.

Every kernel walks a block list of ``kernels.block_layout`` (``PASS_B`` selects the
residue-class-reordered dilated pass) and shares the jitted helpers below: row mapping, score
tile (QK^T + in-kernel relative position / time-bucket bias + masks), online softmax.

* ``attn_fwd``: one program per (query block, head); online softmax over the listed key blocks,
  the target rows' own diagonal, log-sum-exp saved for the backward. Pass B resumes the
  softmax state that pass A left (``ACC``/``LSE``).
* ``attn_bwd_dq``: one program per (query block, head): dq, and the gradients of the bias tables,
  reduced per tile (diagonal sums for w_pos, per-bucket sums for w_time) before they reach
  memory. By default they are added as int64 fixed point (``FIXED_POINT``): integer addition is
  associative, so the result is bit-for-bit deterministic; ``FIXED_POINT=False`` adds float32
  with atomics (nondeterministic order).
* ``attn_bwd_dkdv``: one program per (key block, head) walking the transposed list: dk, dv.

This module is imported twice by ``kernels.triton_ops``: compiled (CUDA) and under the Triton
interpreter (CPU). Interpreter rules: no libdevice calls, ``UPCAST`` turns ``tl.dot`` operands to
float32 (a bf16 dot is wrong there), one autotune configuration.
"""
import triton
import triton.language as tl
from triton import knobs


def _configs():
    if knobs.runtime.interpret:
        return [triton.Config({}, num_warps=1, num_stages=1)]
    return [triton.Config({}, num_warps=w, num_stages=s) for w in (4, 8) for s in (2, 3)]


# ----------------------------------------------------------------------------------------------
# Shared helpers
# ----------------------------------------------------------------------------------------------
# Reductions through tl.reduce with triton's own combine functions: tl.sum/max/min are @jit
# functions of triton.language, which cannot be called from a kernel built for the interpreter
# in a process that imported triton without TRITON_INTERPRET; the interpreter recognises these
# combine functions and reduces with numpy.
@triton.jit
def _sum(x, axis):
    return tl.reduce(x, axis, tl.standard._sum_combine)


@triton.jit
def _max(x, axis):
    return tl.reduce(x, axis, tl.standard._elementwise_max)


@triton.jit
def _min(x, axis):
    return tl.reduce(x, axis, tl.standard._elementwise_min)


@triton.jit
def _dot(a, b, UPCAST: tl.constexpr, IEEE: tl.constexpr):
    if UPCAST:
        return tl.dot(a.to(tl.float32), b.to(tl.float32))
    elif IEEE:
        return tl.dot(a, b, input_precision="ieee")
    else:
        return tl.dot(a, b)


@triton.jit
def _class_of(p, n, R_DIL):
    """Residue class c and index a of permuted position p (n behaviors, dilation R_DIL)."""
    qn = n // R_DIL
    rem = n % R_DIL
    big = rem * (qn + 1)
    in_big = p < big
    qs = tl.maximum(qn, 1)
    c = tl.where(in_big, p // (qn + 1), rem + (p - big) // qs)
    a = tl.where(in_big, p % (qn + 1), (p - big) % qs)
    return c, a


@triton.jit
def _rows(start, n, R_DIL, BLOCK: tl.constexpr, PASS_B: tl.constexpr):
    """Positions of one block in the pass's layout -> (position, local row, class, index in class)."""
    p = start + tl.arange(0, BLOCK)
    if PASS_B:
        c, a = _class_of(p, n, R_DIL)
        i = c + a * R_DIL
    else:
        c = p * 0
        a = p
        i = p
    return p, i, c, a


@triton.jit
def _program_block(BLK_SEQ, BLK_START, OFFS, NT, pid, R_DIL, BLOCK: tl.constexpr, PASS_B: tl.constexpr):
    """The (sequence, block) a program owns: the block's first position, the sequence's first
    token s0, length L and behavior count n, and the block's rows (position in the pass's layout,
    local row, class, index in class, validity: pass B holds behaviors only)."""
    seq = tl.load(BLK_SEQ + pid)
    start = tl.load(BLK_START + pid)
    s0 = tl.load(OFFS + seq)  # int64: token offsets address memory
    # local positions in int32: every [BLOCK, BLOCK] index tile then takes one register per element
    L = (tl.load(OFFS + seq + 1) - s0).to(tl.int32)
    n = L - tl.load(NT + seq).to(tl.int32)
    p, i_loc, c, a = _rows(start, n, R_DIL, BLOCK, PASS_B)
    if PASS_B:
        ok = p < n
    else:
        ok = p < L
    return start, s0, L, n, p, i_loc, c, a, ok


@triton.jit
def _load_rows(PTR, rows, ok, h, stride_t, stride_h, d_, D):
    """Rows ``rows`` of head h of a [T, H, D] tensor as a [BLOCK, BD] tile (zeros where masked)."""
    return tl.load(PTR + rows[:, None] * stride_t + h * stride_h + d_[None, :],
                   mask=ok[:, None] & (d_[None, :] < D), other=0.0)


@triton.jit
def _load_ts(TS, rows, ok, local, HAS_TIME: tl.constexpr):
    """Timestamps of ``rows`` (a placeholder when there is no time bias)."""
    if HAS_TIME:
        ts = tl.load(TS + rows, mask=ok, other=0)
    else:
        ts = local
    return ts


@triton.jit
def _key_tile(code, K, V, TS, s0, n, h, stride_kt, stride_kh, stride_vt, stride_vh, dq_, dv_, DH, DV, R_DIL,
              BLOCK: tl.constexpr, PASS_B: tl.constexpr, HAS_TIME: tl.constexpr):
    """Decode one block-list entry (key block << 1 | full) and load that key block's k, v and
    timestamps; keys seen by other rows are behaviors."""
    full = code & 1
    kb = code >> 1
    pj, j_loc, cj, aj = _rows(kb * BLOCK, n, R_DIL, BLOCK, PASS_B)
    col_ok = pj < n
    cols = s0 + j_loc
    k = _load_rows(K, cols, col_ok, h, stride_kt, stride_kh, dq_, DH)
    v = _load_rows(V, cols, col_ok, h, stride_vt, stride_vh, dv_, DV)
    ts_j = _load_ts(TS, cols, col_ok, j_loc, HAS_TIME)
    return full, kb, j_loc, cj, aj, col_ok, k, v, ts_j


@triton.jit
def _time_bucket(dt, NB):
    """min(floor(log2(max(dt, 1))), NB) from the float64 exponent bits: exact, no libdevice."""
    bits = dt.to(tl.float64).to(tl.int64, bitcast=True)
    e = ((bits >> 52) & 0x7FF) - 1023
    return tl.minimum(tl.maximum(e, 0), NB).to(tl.int32)


@triton.jit
def _score_tile(q, k, i_loc, pos_i, ts_i, ci, ai, row_ok, j_loc, ts_j, cj, aj, col_ok, n, full,
                W_POS, W_TIME, scale, P, NB, WIN, GLOB, S_CLS,
                HAS_POS: tl.constexpr, HAS_TIME: tl.constexpr, PASS_B: tl.constexpr,
                SPARSE: tl.constexpr, HAS_WINDOW: tl.constexpr, UPCAST: tl.constexpr, IEEE: tl.constexpr):
    """Biased, masked scores [rows, cols] (float32) and the time buckets (for the w_time grad)."""
    s = _dot(q, tl.trans(k), UPCAST, IEEE) * scale
    if HAS_POS:
        rel = pos_i[:, None] - j_loc[None, :]  # keys are behaviors: pos_j = j
        rel = tl.minimum(tl.maximum(rel, -(P - 1)), P - 1) + (P - 1)
        s += tl.load(W_POS + rel).to(tl.float32)
    if HAS_TIME:
        dt = ts_i[:, None] - ts_j[None, :]
        dt = tl.where(dt < 0, -dt, dt)
        bk = _time_bucket(dt, NB)
        s += tl.load(W_TIME + bk).to(tl.float32)
    else:
        bk = (i_loc[:, None] * 0 + j_loc[None, :] * 0).to(tl.int32)
    if full == 0:
        ok = row_ok[:, None] & col_ok[None, :]
        if PASS_B:
            ok = ok & (ci[:, None] == cj[None, :]) & ((ai[:, None] - aj[None, :]) >= S_CLS) & (j_loc[None, :] >= GLOB)
        else:
            behavior = i_loc[:, None] < n
            causal = j_loc[None, :] <= i_loc[:, None]
            if SPARSE:
                pat = j_loc[None, :] < GLOB
                if HAS_WINDOW:
                    pat = pat | ((i_loc[:, None] - j_loc[None, :]) < WIN)
                causal = causal & pat
            ok = ok & ((~behavior) | causal)
        s = tl.where(ok, s, float("-inf"))
    return s, bk


@triton.jit
def _self_score(q, k_self, W_POS, W_TIME, P, scale, HAS_POS: tl.constexpr, HAS_TIME: tl.constexpr):
    """A target's score with itself: q_i . k_i * scale + w_pos[P-1] + w_time[0]."""
    s = _sum(q.to(tl.float32) * k_self.to(tl.float32), axis=1) * scale
    if HAS_POS:
        s += tl.load(W_POS + P - 1).to(tl.float32)
    if HAS_TIME:
        s += tl.load(W_TIME).to(tl.float32)
    return s


@triton.jit
def _grad_add(PTR, idx, val, mask, fxp, FIXED_POINT: tl.constexpr):
    if FIXED_POINT:
        tl.atomic_add(PTR + idx, (val * fxp).to(tl.int64), mask=mask)
    else:
        tl.atomic_add(PTR + idx, val, mask=mask)


@triton.jit
def _pos_grad_diagonals(ds, rows_in, delta_blk, MULT, P, DPOS, fxp, BLOCK: tl.constexpr,
                        FIXED_POINT: tl.constexpr):
    """Add the diagonal sums of ds over the rows ``rows_in`` to dw_pos. Row a, column b has
    relative position ``(delta_blk * BLOCK + a - b) * MULT``; a gather skews the diagonals into
    columns (row a of the gathered tile is row a of ds, so the row mask applies after it)."""
    a = tl.arange(0, BLOCK)[:, None]
    t = tl.arange(0, BLOCK)[None, :]
    g = tl.gather(ds, (a - t + BLOCK) % BLOCK, axis=1)  # g[a, t] = ds[a, (a - t) mod BLOCK]
    g = tl.where(rows_in[:, None], g, 0.0)
    upper = _sum(tl.where(a >= t, g, 0.0), axis=0)  # diagonal a - b = t
    lower = _sum(tl.where(a < t, g, 0.0), axis=0)  # diagonal a - b = t - BLOCK
    tt = tl.arange(0, BLOCK)
    rel_u = (delta_blk * BLOCK + tt) * MULT
    rel_l = (delta_blk * BLOCK + tt - BLOCK) * MULT
    _grad_add(DPOS, tl.minimum(rel_u, P - 1) + P - 1, upper, rel_u >= 0, fxp, FIXED_POINT)
    _grad_add(DPOS, tl.minimum(rel_l, P - 1) + P - 1, lower, rel_l >= 0, fxp, FIXED_POINT)


@triton.jit
def _time_grad_tile(acc_t, ds, bk, NB, NBP: tl.constexpr):
    """acc_t[b] += sum of ds over the tile's pairs in bucket b, looping only over present buckets."""
    nz = ds != 0.0
    lo = _min(_min(tl.where(nz, bk, NB + 1), 1), 0)
    hi = _max(_max(tl.where(nz, bk, -1), 1), 0)
    ids = tl.arange(0, NBP)
    for b in range(lo, hi + 1):
        sb = _sum(_sum(tl.where(bk == b, ds, 0.0), axis=1), axis=0)
        acc_t += tl.where(ids == b, sb, 0.0)
    return acc_t


# ----------------------------------------------------------------------------------------------
# Forward
# ----------------------------------------------------------------------------------------------
@triton.autotune(configs=_configs(), key=["BDH", "BDV", "LEN_BUCKET", "PASS_B"])
@triton.jit
def attn_fwd(Q, K, V, OUT, ACC, LSE, OFFS, NT, TS, W_POS, W_TIME,
             BLK_SEQ, BLK_START, KV_PTR, KV_IDX,
             stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh, stride_ot, stride_oh,
             T, H, scale, P, NB, WIN, GLOB, R_DIL, S_CLS, DH, DV, LEN_BUCKET,
             BLOCK: tl.constexpr, BDH: tl.constexpr, BDV: tl.constexpr,
             HAS_POS: tl.constexpr, HAS_TIME: tl.constexpr, PASS_B: tl.constexpr, SPARSE: tl.constexpr,
             HAS_WINDOW: tl.constexpr, STORE_ACC: tl.constexpr, UPCAST: tl.constexpr, IEEE: tl.constexpr):
    pid = tl.program_id(0)
    h = tl.program_id(1)
    hT = h.to(tl.int64) * T
    start, s0, L, n, p, i_loc, ci, ai, row_ok = _program_block(BLK_SEQ, BLK_START, OFFS, NT, pid, R_DIL,
                                                              BLOCK, PASS_B)
    rows = s0 + i_loc
    dq_ = tl.arange(0, BDH)
    dv_ = tl.arange(0, BDV)
    q = _load_rows(Q, rows, row_ok, h, stride_qt, stride_qh, dq_, DH)
    pos_i = tl.minimum(i_loc, n)
    ts_i = _load_ts(TS, rows, row_ok, i_loc, HAS_TIME)
    if PASS_B:  # resume the softmax state pass A left
        m_i = tl.load(LSE + hT + rows, mask=row_ok, other=float("-inf"))
        l_i = tl.where(m_i == float("-inf"), 0.0, 1.0)
        acc = tl.load(ACC + (rows[:, None] * H + h) * DV + dv_[None, :],
                      mask=row_ok[:, None] & (dv_[None, :] < DV), other=0.0)
    else:
        m_i = tl.full([BLOCK], float("-inf"), tl.float32)
        l_i = tl.full([BLOCK], 0.0, tl.float32)
        acc = tl.full([BLOCK, BDV], 0.0, tl.float32)

    e_lo = tl.load(KV_PTR + pid)
    e_hi = tl.load(KV_PTR + pid + 1)
    for e in range(e_lo, e_hi):
        full, kb, j_loc, cj, aj, col_ok, k, v, ts_j = _key_tile(
            tl.load(KV_IDX + e), K, V, TS, s0, n, h, stride_kt, stride_kh, stride_vt, stride_vh, dq_, dv_, DH, DV,
            R_DIL, BLOCK, PASS_B, HAS_TIME)
        s, bk = _score_tile(q, k, i_loc, pos_i, ts_i, ci, ai, row_ok, j_loc, ts_j, cj, aj, col_ok, n, full,
                            W_POS, W_TIME, scale, P, NB, WIN, GLOB, S_CLS,
                            HAS_POS, HAS_TIME, PASS_B, SPARSE, HAS_WINDOW, UPCAST, IEEE)
        m_new = tl.maximum(m_i, _max(s, axis=1))
        m_sub = tl.where(m_new == float("-inf"), 0.0, m_new)
        alpha = tl.exp(m_i - m_sub)
        pt = tl.exp(s - m_sub[:, None])
        l_i = l_i * alpha + _sum(pt, axis=1)
        acc = acc * alpha[:, None] + _dot(pt.to(v.dtype), v, UPCAST, IEEE)
        m_i = m_new

    if not PASS_B:  # targets: their own diagonal
        is_t = row_ok & (i_loc >= n)
        k_self = _load_rows(K, rows, is_t, h, stride_kt, stride_kh, dq_, DH)
        v_self = _load_rows(V, rows, is_t, h, stride_vt, stride_vh, dv_, DV)
        s_self = _self_score(q, k_self, W_POS, W_TIME, P, scale, HAS_POS, HAS_TIME)
        s_self = tl.where(is_t, s_self, float("-inf"))
        m_new = tl.maximum(m_i, s_self)
        m_sub = tl.where(m_new == float("-inf"), 0.0, m_new)
        alpha = tl.exp(m_i - m_sub)
        ps = tl.exp(s_self - m_sub)
        l_i = l_i * alpha + ps
        acc = acc * alpha[:, None] + ps[:, None] * v_self.to(tl.float32)
        m_i = m_new

    l_safe = tl.where(l_i == 0.0, 1.0, l_i)
    o = acc / l_safe[:, None]
    lse = tl.where(l_i == 0.0, float("-inf"), m_i + tl.log(l_safe))
    tl.store(LSE + hT + rows, lse, mask=row_ok)
    o_mask = row_ok[:, None] & (dv_[None, :] < DV)
    out_ptrs = OUT + rows[:, None] * stride_ot + h * stride_oh + dv_[None, :]
    if STORE_ACC:  # pass B follows: behaviors keep float32 state, targets are final
        tl.store(ACC + (rows[:, None] * H + h) * DV + dv_[None, :], o, mask=o_mask & (i_loc[:, None] < n))
        tl.store(out_ptrs, o.to(OUT.dtype.element_ty), mask=o_mask & (i_loc[:, None] >= n))
    else:
        tl.store(out_ptrs, o.to(OUT.dtype.element_ty), mask=o_mask)


# ----------------------------------------------------------------------------------------------
# Backward: dq and the bias-table gradients
# ----------------------------------------------------------------------------------------------
@triton.autotune(configs=_configs(), key=["BDH", "BDV", "LEN_BUCKET", "PASS_B"],
                 reset_to_zero=["DPOS", "DTIME"], restore_value=["DQ"])
@triton.jit
def attn_bwd_dq(Q, K, V, DO, LSE, DELTA, DQ, OFFS, NT, TS, W_POS, W_TIME, DPOS, DTIME, FXP,
                BLK_SEQ, BLK_START, KV_PTR, KV_IDX,
                stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh, stride_dot, stride_doh,
                T, H, scale, P, NB, WIN, GLOB, R_DIL, S_CLS, DH, DV, LEN_BUCKET,
                BLOCK: tl.constexpr, BDH: tl.constexpr, BDV: tl.constexpr, NBP: tl.constexpr,
                HAS_POS: tl.constexpr, HAS_TIME: tl.constexpr, PASS_B: tl.constexpr, SPARSE: tl.constexpr,
                HAS_WINDOW: tl.constexpr, ACCUM: tl.constexpr, POS_GRAD: tl.constexpr, TIME_GRAD: tl.constexpr,
                FIXED_POINT: tl.constexpr, UPCAST: tl.constexpr, IEEE: tl.constexpr):
    pid = tl.program_id(0)
    h = tl.program_id(1)
    hT = h.to(tl.int64) * T
    start, s0, L, n, p, i_loc, ci, ai, row_ok = _program_block(BLK_SEQ, BLK_START, OFFS, NT, pid, R_DIL,
                                                              BLOCK, PASS_B)
    if PASS_B:  # pass B's rows are one residue class: neighbouring rows are R_DIL positions apart
        mult = R_DIL
    else:
        mult = 1
    rows = s0 + i_loc
    dq_ = tl.arange(0, BDH)
    dv_ = tl.arange(0, BDV)
    qmask = row_ok[:, None] & (dq_[None, :] < DH)
    q = _load_rows(Q, rows, row_ok, h, stride_qt, stride_qh, dq_, DH)
    do = _load_rows(DO, rows, row_ok, h, stride_dot, stride_doh, dv_, DV)
    lse = tl.load(LSE + hT + rows, mask=row_ok, other=float("inf"))
    delta = tl.load(DELTA + hT + rows, mask=row_ok, other=0.0)
    pos_i = tl.minimum(i_loc, n)
    ts_i = _load_ts(TS, rows, row_ok, i_loc, HAS_TIME)
    fxp = tl.load(FXP)
    is_beh = row_ok & (i_loc < n)
    is_tgt = row_ok & (i_loc >= n)
    qblk = start // BLOCK
    dq = tl.full([BLOCK, BDH], 0.0, tl.float32)
    acc_t = tl.full([NBP], 0.0, tl.float32)

    e_lo = tl.load(KV_PTR + pid)
    e_hi = tl.load(KV_PTR + pid + 1)
    for e in range(e_lo, e_hi):
        full, kb, j_loc, cj, aj, col_ok, k, v, ts_j = _key_tile(
            tl.load(KV_IDX + e), K, V, TS, s0, n, h, stride_kt, stride_kh, stride_vt, stride_vh, dq_, dv_, DH, DV,
            R_DIL, BLOCK, PASS_B, HAS_TIME)
        s, bk = _score_tile(q, k, i_loc, pos_i, ts_i, ci, ai, row_ok, j_loc, ts_j, cj, aj, col_ok, n, full,
                            W_POS, W_TIME, scale, P, NB, WIN, GLOB, S_CLS,
                            HAS_POS, HAS_TIME, PASS_B, SPARSE, HAS_WINDOW, UPCAST, IEEE)
        pt = tl.exp(s - lse[:, None])
        dp = _dot(do, tl.trans(v), UPCAST, IEEE)
        ds = pt * (dp - delta[:, None])
        dq += _dot(ds.to(k.dtype), k, UPCAST, IEEE)
        if POS_GRAD:
            _pos_grad_diagonals(ds, is_beh, qblk - kb, mult, P, DPOS, fxp,
                                BLOCK, FIXED_POINT)
            if not PASS_B:  # target rows sit at position n: relative position n - j, a column sum
                col_sum = _sum(tl.where(is_tgt[:, None], ds, 0.0), axis=0)
                rel = n - j_loc
                _grad_add(DPOS, tl.minimum(rel, P - 1) + P - 1, col_sum, col_ok, fxp, FIXED_POINT)
        if TIME_GRAD:
            acc_t = _time_grad_tile(acc_t, ds, bk, NB, NBP)

    if not PASS_B:  # targets: their own diagonal
        k_self = _load_rows(K, rows, is_tgt, h, stride_kt, stride_kh, dq_, DH)
        v_self = _load_rows(V, rows, is_tgt, h, stride_vt, stride_vh, dv_, DV)
        s_self = _self_score(q, k_self, W_POS, W_TIME, P, scale, HAS_POS, HAS_TIME)
        p_self = tl.where(is_tgt, tl.exp(s_self - lse), 0.0)
        dp_self = _sum(do.to(tl.float32) * v_self.to(tl.float32), axis=1)
        ds_self = p_self * (dp_self - delta)
        dq += ds_self[:, None] * k_self.to(tl.float32)
        total = _sum(ds_self, axis=0)
        if POS_GRAD:
            _grad_add(DPOS, P - 1, total, total == total, fxp, FIXED_POINT)
        if TIME_GRAD:
            acc_t += tl.where(tl.arange(0, NBP) == 0, total, 0.0)

    dq = dq * scale
    dq_ptrs = DQ + (rows[:, None] * H + h) * DH + dq_[None, :]
    if ACCUM:
        dq += tl.load(dq_ptrs, mask=qmask, other=0.0)
    tl.store(dq_ptrs, dq, mask=qmask)
    if TIME_GRAD:
        ids = tl.arange(0, NBP)
        _grad_add(DTIME, ids, acc_t, ids <= NB, fxp, FIXED_POINT)


# ----------------------------------------------------------------------------------------------
# Backward: dk, dv
# ----------------------------------------------------------------------------------------------
@triton.autotune(configs=_configs(), key=["BDH", "BDV", "LEN_BUCKET", "PASS_B"], restore_value=["DK", "DV"])
@triton.jit
def attn_bwd_dkdv(Q, K, V, DO, LSE, DELTA, DK, DVAL, OFFS, NT, TS, W_POS, W_TIME,
                  BLK_SEQ, BLK_START, Q_PTR, Q_IDX,
                  stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh, stride_dot, stride_doh,
                  T, H, scale, P, NB, WIN, GLOB, R_DIL, S_CLS, DH, DV, LEN_BUCKET,
                  BLOCK: tl.constexpr, BDH: tl.constexpr, BDV: tl.constexpr,
                  HAS_POS: tl.constexpr, HAS_TIME: tl.constexpr, PASS_B: tl.constexpr, SPARSE: tl.constexpr,
                  HAS_WINDOW: tl.constexpr, ACCUM: tl.constexpr, UPCAST: tl.constexpr, IEEE: tl.constexpr):
    pid = tl.program_id(0)
    h = tl.program_id(1)
    hT = h.to(tl.int64) * T
    # key_ok: every key row of the block (target rows get their own diagonal below)
    start, s0, L, n, pj, j_loc, cj, aj, key_ok = _program_block(BLK_SEQ, BLK_START, OFFS, NT, pid, R_DIL,
                                                               BLOCK, PASS_B)
    col_ok = pj < n  # keys seen by other rows are behaviors
    cols = s0 + j_loc
    dq_ = tl.arange(0, BDH)
    dv_ = tl.arange(0, BDV)
    kmask = key_ok[:, None] & (dq_[None, :] < DH)
    vmask = key_ok[:, None] & (dv_[None, :] < DV)
    k = _load_rows(K, cols, key_ok, h, stride_kt, stride_kh, dq_, DH)
    v = _load_rows(V, cols, key_ok, h, stride_vt, stride_vh, dv_, DV)
    ts_j = _load_ts(TS, cols, key_ok, j_loc, HAS_TIME)
    dk = tl.full([BLOCK, BDH], 0.0, tl.float32)
    dv = tl.full([BLOCK, BDV], 0.0, tl.float32)

    e_lo = tl.load(Q_PTR + pid)
    e_hi = tl.load(Q_PTR + pid + 1)
    for e in range(e_lo, e_hi):
        code = tl.load(Q_IDX + e)
        full = code & 1
        p, i_loc, ci, ai = _rows((code >> 1) * BLOCK, n, R_DIL, BLOCK, PASS_B)
        if PASS_B:
            row_ok = p < n
        else:
            row_ok = p < L
        rows = s0 + i_loc
        q = _load_rows(Q, rows, row_ok, h, stride_qt, stride_qh, dq_, DH)
        do = _load_rows(DO, rows, row_ok, h, stride_dot, stride_doh, dv_, DV)
        lse = tl.load(LSE + hT + rows, mask=row_ok, other=float("inf"))
        delta = tl.load(DELTA + hT + rows, mask=row_ok, other=0.0)
        ts_i = _load_ts(TS, rows, row_ok, i_loc, HAS_TIME)
        pos_i = tl.minimum(i_loc, n)
        s, bk = _score_tile(q, k, i_loc, pos_i, ts_i, ci, ai, row_ok, j_loc, ts_j, cj, aj, col_ok, n, full,
                            W_POS, W_TIME, scale, P, NB, WIN, GLOB, S_CLS,
                            HAS_POS, HAS_TIME, PASS_B, SPARSE, HAS_WINDOW, UPCAST, IEEE)
        pt = tl.exp(s - lse[:, None])
        dv += _dot(tl.trans(pt).to(do.dtype), do, UPCAST, IEEE)
        dp = _dot(do, tl.trans(v), UPCAST, IEEE)
        ds = pt * (dp - delta[:, None])
        dk += _dot(tl.trans(ds).to(q.dtype), q, UPCAST, IEEE)

    if not PASS_B:  # target keys are seen only by themselves
        is_t = key_ok & (j_loc >= n)
        qs = _load_rows(Q, cols, is_t, h, stride_qt, stride_qh, dq_, DH)
        dos = _load_rows(DO, cols, is_t, h, stride_dot, stride_doh, dv_, DV)
        lse_s = tl.load(LSE + hT + cols, mask=is_t, other=float("inf"))
        delta_s = tl.load(DELTA + hT + cols, mask=is_t, other=0.0)
        s_self = _self_score(qs, k, W_POS, W_TIME, P, scale, HAS_POS, HAS_TIME)
        p_self = tl.where(is_t, tl.exp(s_self - lse_s), 0.0)
        dv += p_self[:, None] * dos.to(tl.float32)
        dp_self = _sum(dos.to(tl.float32) * v.to(tl.float32), axis=1)
        ds_self = p_self * (dp_self - delta_s)
        dk += ds_self[:, None] * qs.to(tl.float32)

    dk = dk * scale
    dk_ptrs = DK + (cols[:, None] * H + h) * DH + dq_[None, :]
    dv_ptrs = DVAL + (cols[:, None] * H + h) * DV + dv_[None, :]
    if ACCUM:
        dk += tl.load(dk_ptrs, mask=kmask, other=0.0)
        dv += tl.load(dv_ptrs, mask=vmask, other=0.0)
    tl.store(dk_ptrs, dk, mask=kmask)
    tl.store(dv_ptrs, dv, mask=vmask)
