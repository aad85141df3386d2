"""A bias-free FlashAttention-2 yardstick for the hot-loop report (``compile_check --hot-loop``).

Our own kernels after the design of Triton's fused-attention tutorial, on dense ``[B, H, L, dh]``
tensors with causal masking: exp2 with the scale folded into one multiply (log2(e) / sqrt(dh)),
a full-tile loop without masks and a separate diagonal loop, the log-sum-exp kept in base 2, and
a backward of three kernels: Delta = rowsum(dO * O), dk/dv per key block (S^T = k @ q^T, so P^T
and dS^T need no transpose) and dq per query block. They are only compiled (for sm_90, as a JIT
launch would), never run by the project: what they measure is the instruction count of a
FlashAttention-2 hot loop with nothing else in it.
"""
from __future__ import annotations

from typing import Dict, List, Tuple

import torch
import triton
import triton.language as tl

LOG2E = 1.4426950408889634


@triton.jit
def _fwd_tile(acc, l_i, m_i, q, K_ptr, V_ptr, offs_n, lo, hi, qk_scale, stride_kn, stride_vn, offs_m, offs_d,
              MASKED: tl.constexpr, BLOCK_N: tl.constexpr):
    for start_n in range(lo, hi, BLOCK_N):
        start_n = tl.multiple_of(start_n, BLOCK_N)
        k = tl.load(K_ptr + (start_n + offs_n)[None, :] * stride_kn + offs_d[:, None])
        qk = tl.dot(q, k)
        if MASKED:
            mask = offs_m[:, None] >= (start_n + offs_n[None, :])
            qk = qk * qk_scale + tl.where(mask, 0, -1.0e6)
            m_ij = tl.maximum(m_i, tl.max(qk, 1))
            qk -= m_ij[:, None]
        else:
            m_ij = tl.maximum(m_i, tl.max(qk, 1) * qk_scale)
            qk = qk * qk_scale - m_ij[:, None]
        p = tl.math.exp2(qk)
        alpha = tl.math.exp2(m_i - m_ij)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None]
        v = tl.load(V_ptr + (start_n + offs_n)[:, None] * stride_vn + offs_d[None, :])
        acc = tl.dot(p.to(v.dtype), v, acc)
        m_i = m_ij
    return acc, l_i, m_i


@triton.jit
def fa_fwd(Q, K, V, O, M, sm_scale, stride_z, stride_h, stride_n, H, N_CTX,
           HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    start_m = tl.program_id(0)
    off_hz = tl.program_id(1)
    base = (off_hz // H).to(tl.int64) * stride_z + (off_hz % H).to(tl.int64) * stride_h
    offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    q = tl.load(Q + base + offs_m[:, None] * stride_n + offs_d[None, :])
    m_i = tl.zeros([BLOCK_M], dtype=tl.float32) - float("inf")
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32) + 1.0
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    qk_scale = sm_scale * 1.44269504
    acc, l_i, m_i = _fwd_tile(acc, l_i, m_i, q, K + base, V + base, offs_n, 0, start_m * BLOCK_M, qk_scale,
                              stride_n, stride_n, offs_m, offs_d, False, BLOCK_N)
    acc, l_i, m_i = _fwd_tile(acc, l_i, m_i, q, K + base, V + base, offs_n, start_m * BLOCK_M,
                              (start_m + 1) * BLOCK_M, qk_scale, stride_n, stride_n, offs_m, offs_d, True, BLOCK_N)
    m_i += tl.math.log2(l_i)
    acc = acc / l_i[:, None]
    tl.store(M + off_hz * N_CTX + offs_m, m_i)
    tl.store(O + base + offs_m[:, None] * stride_n + offs_d[None, :], acc.to(O.type.element_ty))


@triton.jit
def fa_bwd_preprocess(O, DO, Delta, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr):
    off_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    off_n = tl.arange(0, HEAD_DIM)
    o = tl.load(O + off_m[:, None] * HEAD_DIM + off_n[None, :])
    do = tl.load(DO + off_m[:, None] * HEAD_DIM + off_n[None, :]).to(tl.float32)
    tl.store(Delta + off_m, tl.sum(o * do, axis=1))


@triton.jit
def _dkdv_tile(dk, dv, Q_ptr, k, v, DO_ptr, M_ptr, D_ptr, stride_n, offs_n, offs_d, start_m, num_steps,
               MASKED: tl.constexpr, BLOCK_M: tl.constexpr):
    offs_m = start_m + tl.arange(0, BLOCK_M)
    for _ in range(num_steps):
        qT = tl.load(Q_ptr + offs_m[None, :] * stride_n + offs_d[:, None])
        m = tl.load(M_ptr + offs_m)
        qkT = tl.dot(k, qT)
        pT = tl.math.exp2(qkT - m[None, :])
        if MASKED:
            pT = tl.where(offs_m[None, :] >= offs_n[:, None], pT, 0.0)
        do = tl.load(DO_ptr + offs_m[:, None] * stride_n + offs_d[None, :])
        dv += tl.dot(pT.to(do.dtype), do)
        Di = tl.load(D_ptr + offs_m)
        dpT = tl.dot(v, tl.trans(do)).to(tl.float32)
        dsT = pT * (dpT - Di[None, :])
        dk += tl.dot(dsT.to(qT.dtype), tl.trans(qT))
        offs_m += BLOCK_M
    return dk, dv


@triton.jit
def fa_bwd_dkdv(Q, K, V, sm_scale, DO, DK, DV, M, D, stride_z, stride_h, stride_n, H, N_CTX,
                HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    pid = tl.program_id(0)
    off_hz = tl.program_id(1)
    base = (off_hz // H).to(tl.int64) * stride_z + (off_hz % H).to(tl.int64) * stride_h
    start_n = pid * BLOCK_N
    offs_n = start_n + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    k = tl.load(K + base + offs_n[:, None] * stride_n + offs_d[None, :])
    v = tl.load(V + base + offs_n[:, None] * stride_n + offs_d[None, :])
    dk = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    Mp, Dp = M + off_hz * N_CTX, D + off_hz * N_CTX
    # diagonal block (masked), then every later query block (full)
    dk, dv = _dkdv_tile(dk, dv, Q + base, k, v, DO + base, Mp, Dp, stride_n, offs_n, offs_d, start_n,
                        BLOCK_N // BLOCK_M, True, BLOCK_M)
    start_m = start_n + BLOCK_N
    dk, dv = _dkdv_tile(dk, dv, Q + base, k, v, DO + base, Mp, Dp, stride_n, offs_n, offs_d, start_m,
                        (N_CTX - start_m) // BLOCK_M, False, BLOCK_M)
    tl.store(DV + base + offs_n[:, None] * stride_n + offs_d[None, :], dv.to(DV.type.element_ty))
    dk *= sm_scale
    tl.store(DK + base + offs_n[:, None] * stride_n + offs_d[None, :], dk.to(DK.type.element_ty))


@triton.jit
def _dq_tile(dq, q, K_ptr, V_ptr, do, m, Di, stride_n, offs_m, offs_d, start_n, num_steps,
             MASKED: tl.constexpr, BLOCK_N: tl.constexpr):
    offs_n = start_n + tl.arange(0, BLOCK_N)
    for _ in range(num_steps):
        kT = tl.load(K_ptr + offs_n[None, :] * stride_n + offs_d[:, None])
        vT = tl.load(V_ptr + offs_n[None, :] * stride_n + offs_d[:, None])
        qk = tl.dot(q, kT)
        p = tl.math.exp2(qk - m)
        if MASKED:
            p = tl.where(offs_m[:, None] >= offs_n[None, :], p, 0.0)
        dp = tl.dot(do, vT).to(tl.float32)
        ds = (p * (dp - Di[:, None])).to(kT.dtype)
        dq += tl.dot(ds, tl.trans(kT))
        offs_n += BLOCK_N
    return dq


@triton.jit
def fa_bwd_dq(Q, K, V, DO, DQ, M, D, stride_z, stride_h, stride_n, H, N_CTX,
              HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    LN2: tl.constexpr = 0.6931471824645996
    pid = tl.program_id(0)
    off_hz = tl.program_id(1)
    base = (off_hz // H).to(tl.int64) * stride_z + (off_hz % H).to(tl.int64) * stride_h
    start_m = pid * BLOCK_M
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    q = tl.load(Q + base + offs_m[:, None] * stride_n + offs_d[None, :])
    do = tl.load(DO + base + offs_m[:, None] * stride_n + offs_d[None, :])
    m = tl.load(M + off_hz * N_CTX + offs_m)[:, None]
    Di = tl.load(D + off_hz * N_CTX + offs_m)
    dq = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    # every earlier key block (full), then the diagonal block (masked)
    dq = _dq_tile(dq, q, K + base, V + base, do, m, Di, stride_n, offs_m, offs_d, 0, start_m // BLOCK_N, False,
                  BLOCK_N)
    dq = _dq_tile(dq, q, K + base, V + base, do, m, Di, stride_n, offs_m, offs_d, start_m, BLOCK_M // BLOCK_N, True,
                  BLOCK_N)
    dq *= LN2
    tl.store(DQ + base + offs_m[:, None] * stride_n + offs_d[None, :], dq.to(DQ.type.element_ty))


# the tutorial's configuration space (block shapes, warps, stages) for each kernel
FWD_CONFIGS = [dict(BLOCK_M=bm, BLOCK_N=bn, num_warps=w, num_stages=s)
               for bm in (64, 128) for bn in (32, 64) for w in (4, 8) for s in (2, 3, 4)]
DKDV_CONFIGS = [dict(BLOCK_M=bm, BLOCK_N=bn, num_warps=w, num_stages=s)
                for bm, bn in ((32, 64), (32, 128), (64, 64), (64, 128)) for w in (4, 8) for s in (2, 3)]
DQ_CONFIGS = [dict(BLOCK_M=bm, BLOCK_N=bn, num_warps=w, num_stages=s)
              for bm, bn in ((64, 32), (128, 32), (64, 64), (128, 64)) for w in (4, 8) for s in (2, 3)]


def launches(B: int = 4, H: int = 4, L: int = 2048, dh: int = 64, dtype=torch.bfloat16) -> List[Tuple[str, object,
                                                                                                     tuple, Dict, list]]:
    """(name, jit function, positional args, constexpr kwargs, configs) of the yardstick's three
    hot kernels for a dense causal problem, as their launchers would call them."""
    q, k, v, o, do = (torch.empty(B, H, L, dh, dtype=dtype) for _ in range(5))
    dq, dk, dv = (torch.empty_like(q) for _ in range(3))
    m = torch.empty(B * H, L, dtype=torch.float32)
    delta = torch.empty_like(m)
    s_z, s_h, s_n = q.stride(0), q.stride(1), q.stride(2)
    scale = dh ** -0.5
    return [
        ("fwd", fa_fwd, (q, k, v, o, m, scale, s_z, s_h, s_n, H, L), dict(HEAD_DIM=dh), FWD_CONFIGS),
        ("bwd_dkdv", fa_bwd_dkdv, (q, k, v, scale * LOG2E, do, dk, dv, m, delta, s_z, s_h, s_n, H, L),
         dict(HEAD_DIM=dh), DKDV_CONFIGS),
        ("bwd_dq", fa_bwd_dq, (q, k, v, do, dq, m, delta, s_z, s_h, s_n, H, L), dict(HEAD_DIM=dh), DQ_CONFIGS),
    ]
