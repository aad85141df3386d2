"""Triton kernels of unified attention: one family for the dense and the block-sparse pattern.

Every kernel walks a block list of ``layout.py`` (``PASS_B`` selects the residue-class-reordered
dilated pass) and shares the jitted helpers below. A program owns one block of one sequence for a
*group of G heads*: the relative bias of a tile (position and time-bucket look-ups) does not
depend on the head, so it is computed once per tile and reused by the G heads, whose softmax
states are carried as a tuple (one entry per head).

* Scores are kept in base 2: ``s2 = q.k * (scale * log2 e) + bias * log2 e`` (the launcher passes
  the bias tables pre-scaled), one fused multiply-add per element; probabilities are ``exp2``; the
  log-sum-exp saved for the backward is in base 2. The forward's full tiles (``BIAS_IN_DOT``, any
  scale from 2**-16 up, unless the autotune config says ``BIAS_ADD``) take the bias as the matmul's
  accumulator instead, from tables divided by the scale, and scale in the exponent's multiply-add:
  ``exp2((q.k + bias / scale) * scale * log2 e - m)``, one instruction a score as in
  FlashAttention, where the bias added after scaling and the maximum subtracted took two.
* With both bias terms the kernels gather from one joint table ``w_pos[r] + w_time[b]``
  (``[buckets, JROW]``, bucket-major so that a warp's gather reads consecutive relative positions;
  built by the launcher; ``JROW = 0``: the two tables, past a size limit).
* Time buckets in int32: the launcher rebases each sequence's timestamps to int32 offsets (a span
  of 2**31 units or more is refused), ``bucket = floor(log2(|dt|))`` is ``abs`` + ``bfind``
  (``_flo_abs``; -1 for dt = 0, which the tables' leading copy of bucket 0 absorbs; the
  interpreter uses an exact float-exponent twin). Float timestamps take a float64
  path (``TS_MODE == 2``), exact but slower. ``TS_SORTED`` (the launcher's timestamp check found
  every sequence's behaviors in time order): a full tile's keys all precede its queries, so there
  dt >= 0 and the bucket is ``bfind`` alone.
* Full tiles (every pair allowed, every row a behavior) are counted first in each block's list
  and run in their own loop, without mask code, with the position bias read as a Toeplitz tile
  (``w_pos[delta + a - b]``). The kernels run the targets' own diagonal and the masked tiles
  *before* that loop, so that what only they need is dead in it (registers decide whether a
  4-warp config fits without spills).
* ``attn_fwd``: online softmax over the listed key blocks and the targets' own diagonal, LSE.
  Pass B resumes the softmax state pass A left (``ACC``/``LSE``).
* The strides of the tiles the key loops load (K and V in the forward and dq, Q and dO in dk/dv)
  are constexpr (one compile per stride tuple: a model has one, and the launcher gives size-1
  dimensions their contiguous stride): with ``_tile_offsets`` the loads take immediate offsets.
* ``attn_bwd_delta``: Delta = rowsum(dO * O) per head.
* ``attn_bwd_dq``: dq and the bias-table gradients. dS is summed over the group's heads once per
  tile and added per pair with a relaxed atomic (int64 fixed point by default: integer addition
  is associative, so the result is bit-for-bit deterministic): into the joint table's gradient
  (its column sums are the w_pos gradient, its row sums the w_time gradient; the launcher reduces
  them), or with separate tables into w_pos per pair and w_time per bucket present in the tile.
  Its full tiles gather from the joint table and add to its gradient with inline-asm loads and
  reductions (``_gather``, ``_red_add``; the interpreter's twins are ``tl.load`` and
  ``tl.atomic_add``): triton gives every memory operation a blocked layout of its own, so the bias
  went to the MMA layout of the scores, and dS from it, through shared memory; elementwise asm
  takes the layout of its operands, the MMA one, and neither conversion is left. They carry no NaN
  guard (a NaN there is the gradient's own; the launcher marks the table gradients NaN when dq is
  not finite). With two heads a program, a key block is walked in 32-column sub-tiles (``SPLIT``).
* ``attn_bwd_dkdv``: one program per (key block, head group) walking the transposed list, the
  scores computed transposed (``k @ q^T``) so P^T and dS^T feed the matmuls without a transpose;
  full tiles gather as dq does. With two heads a program, each query block is walked in 32-row
  sub-tiles, one a loop iteration (``SPLIT``; unrolled, two sub-tiles overlapped and spilled).
* Values needed only after a loop (the block's rows, the head group) are read again there
  (``_program_block(AGAIN=True)``, ``_program_id_again``) rather than kept alive through it: at
  255 registers a thread, one such value was what made a config spill.

This module is imported twice by ``launch.py``: compiled (CUDA) and under the Triton interpreter
(CPU). Interpreter rules: no libdevice calls (``_flo_abs`` has an interpreter twin), ``UPCAST`` turns
``tl.dot`` operands to float32 (a bf16 dot is wrong there), one autotune configuration.
"""
import triton
import triton.language as tl
from triton import knobs

# the most heads one program carries (tuple slots); the launcher picks G <= this
MAX_GROUP = 16


# Autotune spaces per kernel: (warps, stages, accumulator columns per program[, SPLIT[,
# MASKED_SPLIT]]). A program carries G = GROUP_COLS // (its per-head columns) heads (at least 1, at
# most H). dq and dk/dv walk each block of their inner loop in SPLIT sub-tiles (dq: key columns,
# dk/dv: query rows; default 1) and each masked block in SPLIT * MASKED_SPLIT (default 2): a
# sub-tile's registers (bias, index, dS sum, S, dP) shrink with it, and no per-row work grows
# (the backward has no running rescale), so dq fits two heads that share the look-up and the
# atomics. Every entry compiles without local-memory spills for bf16 / fp16, dh = dv = 64, dense
# pattern (python -m bench.compile_check --hot-loop); ``_prune_configs`` keeps float32 and sparse
# launches on the 8-warp ones. A 64-row tile at 8 warps computes S (and dP) in both warpgroups:
# each needs all of P / dS as the register operand of its half of the next matmul (1.5x the
# forward's tensor-core work, 1.67x dq's); 4 warps do not repeat it but hold every [64, 64] tile at
# 32 registers a thread: two forward heads fit at one stage only, dq's two heads with 32-column
# sub-tiles at one stage (two: 104 B of stack), dk/dv one head (two, with 32-row sub-tiles:
# 64 B of stack at best). The static count cannot see latency: the GPU autotuner picks among
# these by time. The forward's optional fourth entry, "add", keeps its full tiles adding the bias
# after the scores' matmul (``BIAS_IN_DOT`` off): the accumulator form issues fewer instructions
# but must wait for the bias gather before the matmul starts, which the count cannot weigh.
_SPACES = {
    "fwd": [(4, 1, 128), (4, 1, 128, "add"), (4, 2, 64), (4, 3, 64), (4, 1, 64), (8, 2, 128), (8, 2, 64)],
    "dq": [(4, 1, 64), (8, 2, 64, 1, 1), (4, 1, 128, 2, 2)],
    "dkdv": [(4, 3, 128, 1, 1), (4, 1, 128, 1, 1), (8, 2, 128, 1, 1), (4, 1, 256, 2, 2), (4, 2, 256, 2, 2),
             (4, 3, 256, 2, 2)],
}


def _configs(kernel: str):
    split = kernel in ("dq", "dkdv")
    if knobs.runtime.interpret:  # programs run one after another: one config, all heads per program
        kw = {"GROUP_COLS": 0}
        if kernel == "fwd":  # the bias as the matmul's accumulator where the launcher allows it
            kw["BIAS_ADD"] = False
        if split:  # the interpreter takes the split paths (one sub-tile is their special case): two
            # sub-tiles a block, full or masked (MASKED_SPLIT 2 as well cost the suite a third more time)
            kw.update(SPLIT=2, MASKED_SPLIT=1)
        return [triton.Config(kw, num_warps=1, num_stages=1)]
    out = []
    for w, s, c, *rest in _SPACES[kernel]:
        kw = {"GROUP_COLS": c}
        if split:
            kw.update(SPLIT=rest[0] if rest else 1, MASKED_SPLIT=rest[1] if len(rest) > 1 else 2)
        elif kernel == "fwd":
            kw["BIAS_ADD"] = bool(rest) and rest[0] == "add"
        out.append(triton.Config(kw, num_warps=w, num_stages=s))
    return out


def _prune_configs(configs, named_args, **kwargs):
    """The 4-warp configs are for 16-bit inputs and the dense pattern (python -m
    bench.compile_check): a float32 tile takes twice the registers (1.2-14 KB a thread of local
    memory at 4 warps, dh = 64), and the sparse pattern's masks 16-104 B; those launches keep the
    8-warp configs (float32 is the exact-parity path: it spills there too)."""
    a = {**named_args, **kwargs}
    if a["Q"].element_size() >= 4 or a.get("SPARSE") or a.get("PASS_B"):
        configs = [c for c in configs if c.num_warps >= 8] or configs
        if a.get("PASS_B"):  # the dilated pass: one head per program (two: 16 B of stack)
            fewest = min(c.kwargs.get("GROUP_COLS", 0) for c in configs)
            configs = [c for c in configs if c.kwargs.get("GROUP_COLS", 0) == fewest]
    return configs


_PRUNE = {"early_config_prune": _prune_configs}


def _head_columns(kernel: str, a) -> int:
    if kernel == "fwd":
        return a["BDV"]
    if kernel == "dq":
        return a["BDH"]
    return a["BDH"] + a["BDV"]


def _group(kernel: str):
    """Heuristics: G (heads per program) from the config's column budget, and EVEN_HEADS."""

    def g(a):
        if a["INTERP"]:
            return max(1, min(a["H"], MAX_GROUP))
        return max(1, min(a["H"], MAX_GROUP, a["GROUP_COLS"] // _head_columns(kernel, a)))

    rules = {"G": g, "EVEN_HEADS": lambda a: a["H"] % g(a) == 0}
    if kernel == "fwd":  # the launcher allows it (scale), the config may still add the bias after scaling
        rules["BIAS_IN_DOT"] = lambda a: bool(a["DOT_BIAS_OK"]) and not a["BIAS_ADD"]
    return triton.heuristics(rules)


_KEY = ["H", "BDH", "BDV", "LEN_BUCKET", "PASS_B", "HAS_POS", "TS_MODE", "TS_SORTED", "SPARSE"]
# What a launch reads back of what it (or an earlier launch) wrote: on the first call of a key the
# GPU autotuner runs the launch many times per config, and these are restored after each run.
# Pass B resumes pass A's softmax state (ACC, LSE) and adds to its dq / dk / dv; the bias-table
# gradients (DPOS, DTIME) are accumulated with atomics over both passes (zeroing them instead,
# as reset_to_zero does, would drop pass A's share).
_RESTORE = {"fwd": ["ACC", "LSE"], "dq": ["DQ", "DPOS", "DTIME"], "dkdv": ["DK", "DVAL"]}


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
def _dot(a, b, UPCAST: tl.constexpr, IEEE: tl.constexpr, acc=None):
    """a @ b (+ acc, float32, in the matmul's accumulator)."""
    if UPCAST:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), acc=acc)
    elif IEEE:
        return tl.dot(a, b, acc=acc, input_precision="ieee")
    else:
        return tl.dot(a, b, acc=acc)


@triton.jit
def _flo_abs(x, INTERP: tl.constexpr, ABS: tl.constexpr = True):
    """floor(log2(|x|)) of int32 x, and -1 where x == 0: ``abs`` + ``bfind`` compiled (two
    instructions; bfind of 0 is -1, so no ``| 1`` is needed: the tables carry a row for -1); the
    interpreter reads the float32 exponent and corrects the rounding up of 2**k - 1 (identical
    results for |x| < 2**31). ABS=False: x is known to be >= 0 (``bfind`` alone)."""
    if INTERP:
        if ABS:
            a = tl.abs(x)
        else:
            a = x
        a1 = a | 1
        e = ((a1.to(tl.float32).to(tl.int32, bitcast=True) >> 23) & 0xFF) - 127
        e = tl.minimum(e, 30)
        e = tl.where((tl.full(x.shape, 1, tl.int32) << e) > a1, e - 1, e)
        return tl.where(a == 0, -1, e)
    elif ABS:
        return tl.inline_asm_elementwise("{ .reg .s32 t; abs.s32 t, $1; bfind.u32 $0, t; }", "=r,r", [x],
                                         dtype=tl.int32, is_pure=True, pack=1)
    else:
        return tl.inline_asm_elementwise("bfind.u32 $0, $1;", "=r,r", [x], dtype=tl.int32, is_pure=True, pack=1)


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
def _program_block(BLK_SEQ, BLK_START, OFFS, NT, pid, R_DIL, BLOCK: tl.constexpr, PASS_B: tl.constexpr,
                   AGAIN: tl.constexpr = False):
    """The (sequence, block) a program owns: the block's first position, the sequence's first
    token s0, length L and behavior count n, and the block's rows (position in the pass's layout,
    local row, class, index in class, validity: pass B holds behaviors only). AGAIN: read back
    after a loop, with volatile loads, so that the compiler cannot merge them with the first read
    and keep those values alive through the loop (registers); ``pid`` is then read again too by
    the caller (``_program_id_again``, ``_block_id_after_loops``: the pointers formed from the
    first one were kept otherwise)."""
    seq = tl.load(BLK_SEQ + pid, volatile=AGAIN)
    start = tl.load(BLK_START + pid, volatile=AGAIN)
    s0 = tl.load(OFFS + seq, volatile=AGAIN)  # int64: token offsets address memory
    # local positions in int32: every [BLOCK, BLOCK] index tile then takes one register per element
    L = (tl.load(OFFS + seq + 1, volatile=AGAIN) - s0).to(tl.int32)
    n = L - tl.load(NT + seq, volatile=AGAIN).to(tl.int32)
    p, i_loc, c, a = _rows(start, n, R_DIL, BLOCK, PASS_B)
    if PASS_B:
        ok = p < n
    else:
        ok = p < L
    return start, s0, L, n, p, i_loc, c, a, ok


@triton.jit
def _block_delta(qstart, kstart, n, R_DIL, PASS_B: tl.constexpr):
    """Row 0 of a query block minus column 0 of a key block, in the tile's Toeplitz units: local
    positions (pass A) or indices within the residue class (pass B: full tiles hold one class)."""
    if PASS_B:
        _c, a_q = _class_of(qstart, n, R_DIL)
        _c2, a_k = _class_of(kstart, n, R_DIL)
        return a_q - a_k
    else:
        return qstart - kstart


@triton.jit
def _tile_base(PTR, s0, block_start, idx, stride, off0, d_, PASS_B: tl.constexpr):
    """(base pointer, element offsets) of a [BLOCK, d] tile of rows ``idx`` (local indices). Pass A's
    rows are contiguous: a scalar 64-bit base and loop-invariant 32-bit offsets; pass B's rows are
    one residue class, gathered."""
    if PASS_B:
        return PTR, (s0 + idx)[:, None] * stride + d_[None, :]
    else:
        return PTR + (s0 + block_start) * stride, off0


@triton.jit
def _tile_offsets(stride, d_, ROWS: tl.constexpr):
    """Element offsets ``r * stride + d`` [ROWS, len(d_)] of a tile's rows from its first (loop-
    invariant: pass A adds them to one scalar base per tile), written as ``(16 i + j) * stride``:
    with the stride a constexpr, a thread's rows, 16 apart in the load layout, then differ by
    constants, and its loads take immediate offsets from one 64-bit address (from ``arange(ROWS) *
    stride`` the compiler formed an address per row: 32 instructions a forward tile)."""
    if ROWS >= 16:
        i16 = tl.arange(0, ROWS // 16)[:, None, None] * 16
        j16 = tl.arange(0, 16)[None, :, None]
        return tl.reshape(i16 * stride + (j16 * stride + d_[None, None, :]), [ROWS, d_.shape[0]])
    else:
        return tl.arange(0, ROWS)[:, None] * stride + d_[None, :]


@triton.jit
def _load_ts(TS, rows, ok, TS_MODE: tl.constexpr):
    """Timestamps of ``rows`` (int32 offsets or float64; a placeholder without a time term); full
    tiles use ``_load_ts_full``."""
    if TS_MODE == 0:
        return rows * 0
    else:
        return tl.load(TS + rows, mask=ok, other=0)


@triton.jit
def _load_ts_full(TS, s0, block_start, idx, TS_MODE: tl.constexpr, BLOCK: tl.constexpr, PASS_B: tl.constexpr,
                  PIN: tl.constexpr = False, INTERP: tl.constexpr = True):
    """Timestamps of a full tile's block (local indices ``idx``; its rows and columns are all
    behaviors of the sequence by ``layout.py``'s definition: no mask). Pass A's
    block is contiguous: one scalar base and constant offsets (the compiler then folds them into
    the loads; from ``s0 + idx`` it formed a 64-bit address per load in dq's layout). PIN (pass A,
    compiled, int32 timestamps only): the loaded values pass through a non-pure asm identity, which
    triton cannot rematerialise in another layout, so the load keeps its own (a thread reads
    consecutive columns: one base and immediate offsets) and the values move to the consumer's
    layout through shared memory; loaded in the scores' MMA layout (the forward's asm gather pulls the whole
    index chain there), each column took a 64-bit address of its own (36 instructions a tile)."""
    if TS_MODE == 0:
        return idx * 0
    elif PASS_B:
        return tl.load(TS + (s0 + idx))
    elif PIN and TS_MODE == 1 and not INTERP:  # int32 offsets (the asm moves 32 bits)
        t = tl.load((TS + (s0 + block_start)) + tl.arange(0, BLOCK))
        return tl.inline_asm_elementwise("mov.b32 $0, $1;", "=r,r", [t], dtype=tl.int32, is_pure=False, pack=1)
    else:
        return tl.load((TS + (s0 + block_start)) + tl.arange(0, BLOCK))


@triton.jit
def _load_tile(PTR, off, mask, FULL: tl.constexpr):
    """A [rows, d] tile at ``PTR + off``; full tiles of complete heads need no mask."""
    if FULL:
        return tl.load(PTR + off)
    else:
        return tl.load(PTR + off, mask=mask, other=0.0)


@triton.jit
def _bucket(dt, NB, TS_MODE: tl.constexpr, NB_CLAMP: tl.constexpr, INTERP: tl.constexpr,
            NONNEG: tl.constexpr = False):
    """Time bucket of differences ``dt`` (any shape): min(floor(log2(max(|dt|, 1))), NB), int32,
    except that int32 differences of 0 give -1 (bucket 0 as well): the launcher passes every
    time table (and its gradient) as a view one row past a copy of bucket 0's row, so index -1
    reads bucket 0, and that saves an instruction per pair. NONNEG: int32 ``dt`` known >= 0 (a
    full tile of behaviors in time order, ``TS_SORTED``): no ``abs``."""
    if TS_MODE == 1:
        bk = _flo_abs(dt, INTERP, not NONNEG)
        if NB_CLAMP:
            bk = tl.minimum(bk, NB)
    else:  # float64 timestamps: the exponent of |dt| (exact, no libdevice)
        e = ((tl.abs(dt).to(tl.int64, bitcast=True) >> 52) & 0x7FF) - 1023
        bk = tl.minimum(tl.maximum(e, 0), NB).to(tl.int32)
    return bk


@triton.jit
def _bucket_range(ts_i, ts_j, NB, TS_MODE: tl.constexpr, NB_CLAMP: tl.constexpr, INTERP: tl.constexpr):
    """(lowest, highest) bucket a tile's pairs can fall in, from the rows' and columns' extreme
    timestamps (the bucket grows with |dt|): per tile, not per element."""
    i_lo = _min(ts_i, 0)
    i_hi = _max(ts_i, 0)
    j_lo = _min(ts_j, 0)
    j_hi = _max(ts_j, 0)
    d_max = tl.maximum(i_hi - j_lo, j_hi - i_lo)
    d_min = tl.maximum(tl.maximum(i_lo - j_hi, j_lo - i_hi), 0)
    two = tl.arange(0, 2)
    b = _bucket(tl.where(two == 0, d_min, d_max), NB, TS_MODE, NB_CLAMP, INTERP)
    return _min(b, 0), _max(b, 0)


@triton.jit
def _toeplitz_index(delta, MULT, P, ROWS: tl.constexpr, COLS: tl.constexpr, TRANS: tl.constexpr,
                    POS_CLAMP: tl.constexpr):
    """w_pos index of a full tile, relative position (delta + a - b) * MULT for row a, column b
    (TRANS: the tile is [cols, rows], keys first), as a pair (per-row part [ROWS], rest
    [ROWS, COLS]) that adds up to it: the look-up forms one 64-bit pointer per row and adds the
    rest, one instruction a pair fewer than adding the two parts per pair. Clamped (POS_CLAMP),
    the row part is 0."""
    if POS_CLAMP:
        if TRANS:
            rel = (delta + tl.arange(0, COLS)[None, :] - tl.arange(0, ROWS)[:, None]) * MULT
        else:
            rel = (delta + tl.arange(0, ROWS)[:, None] - tl.arange(0, COLS)[None, :]) * MULT
        rel = tl.minimum(tl.maximum(rel, -(P - 1)), P - 1)
        return tl.arange(0, ROWS) * 0, rel + (P - 1)
    elif TRANS:
        cols = (delta + tl.arange(0, COLS)) * MULT + (P - 1)
        return -tl.arange(0, ROWS) * MULT, tl.broadcast_to(cols[None, :], [ROWS, COLS])
    else:
        cols = -tl.arange(0, COLS) * MULT
        return (delta + tl.arange(0, ROWS)) * MULT + (P - 1), tl.broadcast_to(cols[None, :], [ROWS, COLS])


@triton.jit
def _general_pos_index(pos_i, j_loc, P):
    """w_pos index of pos_i - j for row positions pos_i (targets at n) and behavior keys j of a
    masked tile (as ``_toeplitz_index``'s pair, the row part 0), always clamped into [0, 2P - 2]:
    pairs the tile does not hold (columns past the sequence) reach beyond the table, and the
    look-up and the gradient's atomics take no mask."""
    rel = tl.minimum(tl.maximum(pos_i[:, None] - j_loc[None, :], -(P - 1)), P - 1)
    return pos_i * 0, rel + (P - 1)


@triton.jit
def _pair_mask(row_ok, col_ok, i_loc, j_loc, ci, cj, ai, aj, n, WIN, GLOB, S_CLS, PASS_B: tl.constexpr,
               SPARSE: tl.constexpr, HAS_WINDOW: tl.constexpr):
    """Allowed pairs [rows, cols] of a masked tile (SPEC section 7)."""
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
    return ok


@triton.jit
def _joint_index(pos_idx, bk, JROW: tl.constexpr):
    """Index into the joint table, bucket-major ``[buckets, JROW]``: along a tile's row (and
    across the rows and columns one load instruction of a warp covers, all near one diagonal) the
    relative positions are consecutive and the bucket mostly the same, so a warp's gather (and the
    gradient's atomics) touches one or two 128-byte lines; position-major, each relative position
    was a row of its own (up to 14 lines per instruction in the MMA layout). JROW is a constexpr
    power of two: a runtime row length took dq's 4-warp config past its registers."""
    return bk * JROW + pos_idx


@triton.jit
def _gather(ptrs, INTERP: tl.constexpr):
    """float32 values at ``ptrs`` (a read-only table; any shape), compiled as one ``ld.global.nc``
    an element in inline asm: triton treats that as elementwise, not as a memory operation, so it
    takes the layout of its pointers (the index chain, which follows the scores' MMA layout) and
    needs no conversion. The interpreter's twin is ``tl.load`` (identical values)."""
    if INTERP:
        return tl.load(ptrs)
    else:
        return tl.inline_asm_elementwise("ld.global.nc.f32 $0, [$1];", "=r,l", [ptrs], dtype=tl.float32,
                                         is_pure=True, pack=1)


@triton.jit
def _red_add(ptrs, val, INTERP: tl.constexpr):
    """Relaxed atomic add of int64 or float32 ``val`` at ``ptrs`` (no mask), compiled as one
    ``red.relaxed.gpu`` an element in inline asm (in ``val``'s layout, as ``_gather``); the
    interpreter's twin is ``tl.atomic_add(sem="relaxed")``. int64 adds are the same bits as u64."""
    if INTERP:
        tl.atomic_add(ptrs, val, sem="relaxed")
    elif val.dtype == tl.int64:
        tl.inline_asm_elementwise("red.relaxed.gpu.global.add.u64 [$1], $2;", "=r,l,l", [ptrs, val],
                                  dtype=tl.int32, is_pure=False, pack=1)
    else:
        tl.inline_asm_elementwise("red.relaxed.gpu.global.add.f32 [$1], $2;", "=r,l,r", [ptrs, val],
                                  dtype=tl.int32, is_pure=False, pack=1)


@triton.jit
def _program_id_again(AXIS: tl.constexpr, INTERP: tl.constexpr):
    """tl.program_id(AXIS) read afresh (compiled: a volatile read of ``%ctaid``), for what follows the
    key loops: the first read, merged with it, and values derived from it were kept alive through the
    loops (in local memory when registers ran out)."""
    if INTERP:
        return tl.program_id(AXIS)
    elif AXIS == 0:
        return tl.inline_asm_elementwise("mov.u32 $0, %ctaid.x;", "=r", [], dtype=tl.int32, is_pure=False, pack=1)
    else:
        return tl.inline_asm_elementwise("mov.u32 $0, %ctaid.y;", "=r", [], dtype=tl.int32, is_pure=False, pack=1)


@triton.jit
def _block_id_after_loops(KV_PTR, INTERP: tl.constexpr):
    """tl.program_id(0) after the key loops, as ``_program_id_again`` plus a volatile read of
    ``KV_PTR[0]``, which is 0 (the block lists' CSR offsets start there): ptxas merges the two
    ``%ctaid`` reads and formed the address of the post-loop reads before the forward's loops,
    kept through them in local memory (8 B) at 254 registers; now it cannot."""
    return _program_id_again(0, INTERP) + tl.load(KV_PTR, volatile=True)


@triton.jit
def _bias_lookup(pos, ts_a, ts_b, W_POS, W_TIME, NB, JROW: tl.constexpr, HAS_POS: tl.constexpr,
                 TS_MODE: tl.constexpr, NB_CLAMP: tl.constexpr, INTERP: tl.constexpr,
                 ASM_GATHER: tl.constexpr = False, DT_ORDER: tl.constexpr = 0):
    """(bias, time bucket, index into ``W_POS``) of pairs with w_pos indices ``pos`` (a pair: per-row
    part [rows], rest [rows, cols]; the index is their sum) and timestamps ``ts_a[:, None]``,
    ``ts_b[None, :]``. With JROW > 0 (both terms) ``W_POS`` is the joint table
    ``w_pos[r] + w_time[b]`` (``[buckets, JROW]``, bucket-major, JROW a power of two >= 2P - 1): one
    gather per pair instead of two loads and an add, and the index returned (the same kind of pair)
    is the joint one (the gradient adds there: computed once, not again after the matmuls); JROW = 0
    with both terms (a joint table too large) reads the two tables. The w_pos indices must lie in
    [0, 2P - 2]: no mask here. ASM_GATHER: the joint table gathered with ``_gather`` (the bias then
    in the MMA layout of the scores, no conversion through shared memory; full tiles of dq, dk/dv
    and, with BIAS_IN_DOT, the forward: its bias goes straight into the accumulator registers;
    adding it after scaling, the forward lost more than it saved, 1.69 against 1.65 per kFLOP,
    the key timestamps loaded in the MMA layout: ``_load_ts_full``'s PIN). DT_ORDER: 0 for
    any timestamps; 1 when ``ts_a >= ts_b`` for every pair, -1 when ``ts_a <= ts_b`` (a full tile
    of behaviors in time order, the query later than the key): the difference is then taken in the
    order that makes it >= 0 and its bucket needs no ``abs``."""
    row, rest = pos
    idx = pos
    if TS_MODE != 0:
        if DT_ORDER == -1:
            dt = ts_b[None, :] - ts_a[:, None]
        else:
            dt = ts_a[:, None] - ts_b[None, :]
        bk = _bucket(dt, NB, TS_MODE, NB_CLAMP, INTERP, DT_ORDER != 0)
        if HAS_POS:
            if JROW > 0:
                rest = _joint_index(rest, bk, JROW)
                idx = (row, rest)
                if ASM_GATHER:
                    bias = _gather((W_POS + row)[:, None] + rest, INTERP)
                else:
                    bias = tl.load((W_POS + row)[:, None] + rest)
            else:
                bias = tl.load((W_POS + row)[:, None] + rest) + tl.load(W_TIME + bk)
        else:
            bias = tl.load(W_TIME + bk)
    else:
        bk = (rest * 0).to(tl.int32)
        if HAS_POS:
            bias = tl.load((W_POS + row)[:, None] + rest)
        else:
            bias = bk.to(tl.float32)
    return bias, bk, idx


@triton.jit
def _tile_bias(delta, MULT, pos_i, j_loc, ts_i, ts_j, W_POS, W_TIME, P, NB, ROWS: tl.constexpr, COLS: tl.constexpr,
               FULL: tl.constexpr, HAS_POS: tl.constexpr, TS_MODE: tl.constexpr, POS_CLAMP: tl.constexpr,
               NB_CLAMP: tl.constexpr, JROW: tl.constexpr, INTERP: tl.constexpr, ASM_GATHER: tl.constexpr = False,
               DT_ORDER: tl.constexpr = 0):
    """(bias, time bucket, index into ``W_POS``: joint with JROW > 0, else w_pos) of a tile
    [rows, cols]; the bias in base 2 (tables pre-scaled)."""
    if FULL:
        pos = _toeplitz_index(delta, MULT, P, ROWS, COLS, False, POS_CLAMP)
    else:
        pos = _general_pos_index(pos_i, j_loc, P)
    return _bias_lookup(pos, ts_i, ts_j, W_POS, W_TIME, NB, JROW, HAS_POS, TS_MODE, NB_CLAMP, INTERP, ASM_GATHER,
                        DT_ORDER)


@triton.jit
def _bias_grad_tile(DPOS, acc_t, ds, idx, bk, ts_i, ts_j, fxp, P, NB, JROW: tl.constexpr, NBP: tl.constexpr,
                    FULL: tl.constexpr, POS_GRAD: tl.constexpr, TIME_GRAD: tl.constexpr, TS_MODE: tl.constexpr,
                    NB_CLAMP: tl.constexpr, FIXED_POINT: tl.constexpr, INTERP: tl.constexpr,
                    DS_SCALED: tl.constexpr = False):
    """A tile's dS (summed over the group's heads) into the bias-table gradients. With both tables
    (JROW > 0) one atomic per pair into the joint table's gradient [buckets, JROW], whose column
    sums are the w_pos gradient and row sums the w_time gradient (the launcher reduces it); otherwise
    w_pos per pair and w_time per bucket present into ``acc_t``. No mask: a pair the tile does
    not hold has P = 0, so dS = 0; a masked tile's position indices come clamped into the table
    (``_tile_bias``), so every add stays in bounds. Not keeping the pair mask until the atomics
    saves a register per pair. A masked tile's NaN dS adds nothing (a disallowed pair's P = 0 times
    a NaN dP, from a NaN value row the pair does not use); a full tile's pairs are all allowed, so
    a NaN there is the gradient's own: in int64 fixed point it adds garbage (a NaN converts to
    INT64_MIN), and the launcher then makes the whole table gradient NaN (the same NaN reaches dq,
    which it checks). That saves the guard's two instructions a pair in the steady loop.
    ``idx`` is ``_tile_bias``'s index pair (joint with JROW > 0, else w_pos), added up per pair
    here: a per-row pointer, as the look-up uses, made dq's 4-warp config spill 64 B."""
    if not FULL:
        ds = tl.where(ds == ds, ds, 0.0)
    row, rest = idx
    if JROW > 0:  # DPOS is the whole gradient buffer: its row 0 (dt = 0) sits before the table's view
        if POS_GRAD or TIME_GRAD:
            # full tiles: inline-asm reductions in dS's own (MMA) layout, at a per-row pointer plus
            # the rest (as the look-up, ``_bias_lookup(ASM_GATHER)``). Masked tiles (a few per
            # block; the asm path saved 1 % there): tl.atomic_add, with a contiguity hint that is a
            # layout request, not a fact (it must sit where the index is formed: through a function
            # argument it is lost): triton's coalescing pass gives each memory operation a blocked
            # layout of its own, and the hint gives the atomics and the masked look-up one order
            # apart from the K / V tiles, so the index chain is computed in one layout, not two.
            if FULL:
                _grad_add((DPOS + JROW + row)[:, None], rest, ds, None, fxp, FIXED_POINT, DS_SCALED, True, INTERP)
            else:
                _grad_add(DPOS + JROW, tl.max_contiguous(row[:, None] + rest, [2, 1]), ds, None, fxp, FIXED_POINT,
                          DS_SCALED)
    else:
        if POS_GRAD:
            _grad_add(DPOS, row[:, None] + rest, ds, None, fxp, FIXED_POINT, DS_SCALED)
        if TIME_GRAD:
            acc_t = _time_grad_tile(acc_t, ds, bk, ts_i, ts_j, NB, NBP, TS_MODE, NB_CLAMP, INTERP)
    return acc_t


@triton.jit
def _self_score(q, k_self, W_POS, W_TIME, P, qk_scale, HAS_POS: tl.constexpr, TS_MODE: tl.constexpr,
                JROW: tl.constexpr):
    """A target's score with itself (base 2): q_i . k_i * scale + w_pos[P-1] + w_time[0]."""
    s = _sum(q.to(tl.float32) * k_self.to(tl.float32), axis=1) * qk_scale
    if HAS_POS and TS_MODE != 0 and JROW > 0:
        s += tl.load(W_POS + (P - 1))  # bucket 0's row, relative position 0
    else:
        if HAS_POS:
            s += tl.load(W_POS + P - 1)
        if TS_MODE != 0:
            s += tl.load(W_TIME)
    return s


@triton.jit
def _grad_add(PTR, idx, val, mask, fxp, FIXED_POINT: tl.constexpr, SCALED: tl.constexpr = False,
              ASM: tl.constexpr = False, INTERP: tl.constexpr = True):
    """Relaxed atomic add into a bias-table gradient (int64 fixed point by default; ``SCALED``:
    ``val`` comes already multiplied by the fixed-point scale). ASM (no mask): as ``_red_add``,
    in ``val``'s own layout."""
    if FIXED_POINT and SCALED:
        v = val.to(tl.int64)
    elif FIXED_POINT:
        v = (val * fxp).to(tl.int64)
    else:
        v = val
    if ASM:
        _red_add(PTR + idx, v, INTERP)
    else:
        tl.atomic_add(PTR + idx, v, mask=mask, sem="relaxed")


@triton.jit
def _time_grad_tile(acc_t, ds, bk, ts_i, ts_j, NB, NBP: tl.constexpr, TS_MODE: tl.constexpr,
                    NB_CLAMP: tl.constexpr, INTERP: tl.constexpr):
    """acc_t[b] += sum of ds over the tile's pairs in bucket b, for the buckets the tile's
    timestamp range spans (rows and columns outside the tile's pairs read timestamp 0, which
    only widens the range; their ds is 0)."""
    lo, hi = _bucket_range(ts_i, ts_j, NB, TS_MODE, NB_CLAMP, INTERP)
    ids = tl.arange(0, NBP)
    for b in range(lo, hi + 1):  # b = -1 (dt == 0) is bucket 0
        sb = _sum(_sum(tl.where(bk == b, ds, 0.0), axis=1), axis=0)
        acc_t += tl.where(ids == tl.maximum(b, 0), sb, 0.0)
    return acc_t


@triton.jit
def _head_mask(h, H, d_, D: tl.constexpr, BD: tl.constexpr, EVEN_HEADS: tl.constexpr):
    """[1, BD] validity of a head's feature columns (all true for complete heads and dims)."""
    ok = d_[None, :] < D
    if not EVEN_HEADS:
        ok = ok & (h < H)
    return ok


# ----------------------------------------------------------------------------------------------
# Forward
# ----------------------------------------------------------------------------------------------
@triton.jit
def _fwd_init(h, H, Q, ACC, LSE, rows, row_ok, T, stride_qt, stride_qh, dq_, dv_, DH: tl.constexpr,
              DV: tl.constexpr, BLOCK: tl.constexpr, BDV: tl.constexpr, EVEN_HEADS: tl.constexpr,
              PASS_B: tl.constexpr):
    """A head's state (h, q, acc, m, l): fresh, or pass A's (normalized output, LSE) in pass B."""
    q = tl.load(Q + rows[:, None] * stride_qt + h * stride_qh + dq_[None, :],
                mask=row_ok[:, None] & _head_mask(h, H, dq_, DH, DH, EVEN_HEADS), other=0.0)
    if PASS_B:
        hok = row_ok
        if not EVEN_HEADS:
            hok = hok & (h < H)
        m_i = tl.load(LSE + h.to(tl.int64) * T + rows, mask=hok, other=float("-inf"))
        l_i = tl.where(m_i == float("-inf"), 0.0, 1.0)
        acc = tl.load(ACC + (rows[:, None] * H + h) * DV + dv_[None, :],
                      mask=hok[:, None] & (dv_[None, :] < DV), other=0.0)
    else:
        m_i = tl.full([BLOCK], float("-inf"), tl.float32)
        l_i = tl.full([BLOCK], 0.0, tl.float32)
        acc = tl.full([BLOCK, BDV], 0.0, tl.float32)
    return (h, q, acc, m_i, l_i)


@triton.jit
def _fwd_update(st, H, K, V, koff, voff, col_ok, stride_kh, stride_vh, dq_, dv_, bias, ok, qk_scale,
                DH: tl.constexpr, DV: tl.constexpr, FULL: tl.constexpr, EVEN_HEADS: tl.constexpr,
                UPCAST: tl.constexpr, IEEE: tl.constexpr, BIAS_IN_DOT: tl.constexpr):
    """One key tile for one head: scores, online softmax, accumulation. ``bias`` in base 2
    (``s = q.k * qk_scale + bias``), except in a full tile with BIAS_IN_DOT: there it is in units
    of the scale (tables divided by it), the matmul's accumulator, and the base-2 scale is applied
    where the exponent is formed: ``exp2((q.k + bias) * qk_scale - m)`` is one multiply-add a
    score, as in FlashAttention (two otherwise: ``* qk_scale + bias``, then ``- m``). Needs
    qk_scale > 0 (the row maximum is taken before scaling). Masked tiles keep the two and the
    base-2 tables (as the accumulator, each head but the last took a copy of the bias, and their
    ``where`` needs the scaled score anyway)."""
    h, q, acc, m_i, l_i = st
    kmask = col_ok[:, None] & _head_mask(h, H, dq_, DH, DH, EVEN_HEADS)
    vmask = col_ok[:, None] & _head_mask(h, H, dv_, DV, DV, EVEN_HEADS)
    even = FULL and EVEN_HEADS and (DH == q.shape[1]) and (DV == acc.shape[1])
    k = _load_tile(K + h * stride_kh, koff, kmask, even)
    if BIAS_IN_DOT and FULL:
        s = _dot(q, tl.trans(k), UPCAST, IEEE, bias)
        m_new = tl.maximum(m_i, _max(s, 1) * qk_scale)
        m_sub = m_new
        p = tl.math.exp2(s * qk_scale - m_sub[:, None])
    else:
        s = _dot(q, tl.trans(k), UPCAST, IEEE) * qk_scale + bias
        if FULL:
            m_new = tl.maximum(m_i, _max(s, 1))
            m_sub = m_new
        else:
            s = tl.where(ok, s, float("-inf"))
            m_new = tl.maximum(m_i, _max(s, 1))
            m_sub = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = tl.math.exp2(s - m_sub[:, None])
    alpha = tl.math.exp2(m_i - m_sub)
    l_i = l_i * alpha + _sum(p, 1)
    v = _load_tile(V + h * stride_vh, voff, vmask, even)
    acc = acc * alpha[:, None] + _dot(p.to(v.dtype), v, UPCAST, IEEE)
    return (h, q, acc, m_new, l_i)


@triton.jit
def _fwd_self(st, H, K, V, W_POS, W_TIME, rows, is_t, stride_kt, stride_kh, stride_vt, stride_vh, dq_, dv_, P,
              qk_scale, DH: tl.constexpr, DV: tl.constexpr, HAS_POS: tl.constexpr, TS_MODE: tl.constexpr,
              JROW: tl.constexpr, EVEN_HEADS: tl.constexpr):
    """Target rows attend to themselves."""
    h, q, acc, m_i, l_i = st
    k_self = tl.load(K + rows[:, None] * stride_kt + h * stride_kh + dq_[None, :],
                     mask=is_t[:, None] & _head_mask(h, H, dq_, DH, DH, EVEN_HEADS), other=0.0)
    v_self = tl.load(V + rows[:, None] * stride_vt + h * stride_vh + dv_[None, :],
                     mask=is_t[:, None] & _head_mask(h, H, dv_, DV, DV, EVEN_HEADS), other=0.0)
    s_self = tl.where(is_t, _self_score(q, k_self, W_POS, W_TIME, P, qk_scale, HAS_POS, TS_MODE, JROW), float("-inf"))
    m_new = tl.maximum(m_i, s_self)
    m_sub = tl.where(m_new == float("-inf"), 0.0, m_new)
    alpha = tl.math.exp2(m_i - m_sub)
    ps = tl.math.exp2(s_self - m_sub)
    l_i = l_i * alpha + ps
    acc = acc * alpha[:, None] + ps[:, None] * v_self.to(tl.float32)
    return (h, q, acc, m_new, l_i)


@triton.jit
def _fwd_store(st, H, OUT, ACC, LSE, rows, row_ok, i_loc, n, T, stride_ot, stride_oh, dv_, DV: tl.constexpr,
               STORE_ACC: tl.constexpr, EVEN_HEADS: tl.constexpr):
    h, q, acc, m_i, l_i = st
    hok = row_ok
    if not EVEN_HEADS:
        hok = hok & (h < H)
    l_safe = tl.where(l_i == 0.0, 1.0, l_i)
    o = acc / l_safe[:, None]
    lse = tl.where(l_i == 0.0, float("-inf"), m_i + tl.math.log2(l_safe))
    tl.store(LSE + h.to(tl.int64) * T + rows, lse, mask=hok)
    o_mask = hok[:, None] & (dv_[None, :] < DV)
    out_ptrs = OUT + rows[:, None] * stride_ot + h * stride_oh + dv_[None, :]
    if STORE_ACC:  # pass B follows: behaviors keep float32 state, targets are final
        tl.store(ACC + (rows[:, None] * H + h) * DV + dv_[None, :], o, mask=o_mask & (i_loc[:, None] < n))
        tl.store(out_ptrs, o.to(OUT.dtype.element_ty), mask=o_mask & (i_loc[:, None] >= n))
    else:
        tl.store(out_ptrs, o.to(OUT.dtype.element_ty), mask=o_mask)


@triton.autotune(configs=_configs("fwd"), key=_KEY, restore_value=_RESTORE["fwd"], prune_configs_by=_PRUNE)
@_group("fwd")
@triton.jit
def attn_fwd(Q, K, V, OUT, ACC, LSE, OFFS, NT, TS, W_POS, W_TIME, W_POS_DOT, W_TIME_DOT,
             BLK_SEQ, BLK_START, KV_PTR, KV_IDX, KV_FULL,
             stride_qt, stride_qh, stride_kt: tl.constexpr, stride_kh: tl.constexpr, stride_vt: tl.constexpr,
             stride_vh: tl.constexpr, stride_ot, stride_oh,
             T, H, qk_scale, P, NB, WIN, GLOB, R_DIL, S_CLS, LEN_BUCKET,
             DH: tl.constexpr, DV: tl.constexpr, BLOCK: tl.constexpr, BDH: tl.constexpr, BDV: tl.constexpr,
             GROUP_COLS: tl.constexpr, G: tl.constexpr, EVEN_HEADS: tl.constexpr, HAS_POS: tl.constexpr,
             TS_MODE: tl.constexpr, TS_SORTED: tl.constexpr,
             PASS_B: tl.constexpr, SPARSE: tl.constexpr, HAS_WINDOW: tl.constexpr, STORE_ACC: tl.constexpr,
             POS_CLAMP: tl.constexpr, NB_CLAMP: tl.constexpr,
             JROW: tl.constexpr, UPCAST: tl.constexpr, IEEE: tl.constexpr,
             INTERP: tl.constexpr, DOT_BIAS_OK: tl.constexpr, BIAS_ADD: tl.constexpr, BIAS_IN_DOT: tl.constexpr):
    pid = tl.program_id(0)
    hg = tl.program_id(1)
    start, s0, L, n, p, i_loc, ci, ai, row_ok = _program_block(BLK_SEQ, BLK_START, OFFS, NT, pid, R_DIL,
                                                              BLOCK, PASS_B)
    rows = s0 + i_loc
    dq_ = tl.arange(0, BDH)
    dv_ = tl.arange(0, BDV)
    pos_i = tl.minimum(i_loc, n)
    ts_i = _load_ts(TS, rows, row_ok, TS_MODE)
    if PASS_B:
        mult = R_DIL
    else:
        mult = 1
    states = [_fwd_init(hg * G + i, H, Q, ACC, LSE, rows, row_ok, T, stride_qt, stride_qh, dq_, dv_, DH, DV,
                        BLOCK, BDV, EVEN_HEADS, PASS_B) for i in (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14,
                                                                    15)[:G]]
    if not PASS_B:  # targets: their own diagonal, first (its pointers are dead before the key loops)
        is_t = row_ok & (i_loc >= n)
        for i in tl.static_range(G):
            st = _fwd_self(states[i], H, K, V, W_POS, W_TIME, rows, is_t, stride_kt, stride_kh, stride_vt, stride_vh,
                           dq_, dv_, P, qk_scale, DH, DV, HAS_POS, TS_MODE, JROW, EVEN_HEADS)
            states = states[:i] + [st] + states[i + 1:]
    koff0 = _tile_offsets(stride_kt, dq_, BLOCK)  # pass A's key tiles: 32-bit offsets from one base
    voff0 = _tile_offsets(stride_vt, dv_, BLOCK)
    e_lo = tl.load(KV_PTR + pid)
    e_full = e_lo + tl.load(KV_FULL + pid)
    e_hi = tl.load(KV_PTR + pid + 1)
    # masked tiles first (the diagonal, partial blocks, target rows, pattern edges): what only they
    # need is then dead before the full-tile loop, whose registers are the scarcest
    for e in range(e_full, e_hi):
        kb = tl.load(KV_IDX + e) >> 1
        pj, j_loc, cj, aj = _rows(kb * BLOCK, n, R_DIL, BLOCK, PASS_B)
        col_ok = pj < n
        ts_j = _load_ts(TS, s0 + j_loc, col_ok, TS_MODE)
        bias, _bk, _pidx = _tile_bias(0, mult, pos_i, j_loc, ts_i, ts_j, W_POS, W_TIME, P, NB, BLOCK, BLOCK,
                                      False, HAS_POS, TS_MODE, POS_CLAMP, NB_CLAMP, JROW, INTERP)
        ok = _pair_mask(row_ok, col_ok, i_loc, j_loc, ci, cj, ai, aj, n, WIN, GLOB, S_CLS, PASS_B, SPARSE, HAS_WINDOW)
        Kt, koff = _tile_base(K, s0, kb * BLOCK, j_loc, stride_kt, koff0, dq_, PASS_B)
        Vt, voff = _tile_base(V, s0, kb * BLOCK, j_loc, stride_vt, voff0, dv_, PASS_B)
        for i in tl.static_range(G):
            st = _fwd_update(states[i], H, Kt, Vt, koff, voff, col_ok, stride_kh, stride_vh, dq_, dv_, bias, ok,
                             qk_scale, DH, DV, False, EVEN_HEADS, UPCAST, IEEE, False)
            states = states[:i] + [st] + states[i + 1:]
    # full tiles: no mask, Toeplitz position bias
    for e in range(e_lo, e_full):
        kb = tl.load(KV_IDX + e) >> 1
        pj, j_loc, cj, aj = _rows(kb * BLOCK, n, R_DIL, BLOCK, PASS_B)
        ts_j = _load_ts_full(TS, s0, kb * BLOCK, j_loc, TS_MODE, BLOCK, PASS_B, BIAS_IN_DOT, INTERP)
        delta_pos = _block_delta(start, kb * BLOCK, n, R_DIL, PASS_B)
        bias, _bk, _pidx = _tile_bias(delta_pos, mult, pos_i, j_loc, ts_i, ts_j, W_POS_DOT, W_TIME_DOT, P, NB, BLOCK,
                                      BLOCK, True, HAS_POS, TS_MODE, POS_CLAMP, NB_CLAMP, JROW, INTERP, BIAS_IN_DOT,
                                      TS_SORTED)
        Kt, koff = _tile_base(K, s0, kb * BLOCK, j_loc, stride_kt, koff0, dq_, PASS_B)
        Vt, voff = _tile_base(V, s0, kb * BLOCK, j_loc, stride_vt, voff0, dv_, PASS_B)
        for i in tl.static_range(G):
            st = _fwd_update(states[i], H, Kt, Vt, koff, voff, pj < n, stride_kh, stride_vh, dq_, dv_, bias, bias,
                             qk_scale, DH, DV, True, EVEN_HEADS, UPCAST, IEEE, BIAS_IN_DOT)
            states = states[:i] + [st] + states[i + 1:]
    # the block's rows and head group again: read back rather than kept alive through the loops
    _s, s0, _L, n, _p, i_loc, _c, _a, row_ok = _program_block(BLK_SEQ, BLK_START, OFFS, NT,
                                                              _block_id_after_loops(KV_PTR, INTERP), R_DIL, BLOCK,
                                                              PASS_B, True)
    hg = _program_id_again(1, INTERP)
    for i in tl.static_range(G):
        _h, q, acc, m_i, l_i = states[i]
        _fwd_store((hg * G + i, q, acc, m_i, l_i), H, OUT, ACC, LSE, s0 + i_loc, row_ok, i_loc, n, T, stride_ot,
                   stride_oh, dv_, DV, STORE_ACC, EVEN_HEADS)


# ----------------------------------------------------------------------------------------------
# Backward: Delta = rowsum(dO * O)
# ----------------------------------------------------------------------------------------------
@triton.jit
def attn_bwd_delta(OUT, DO, DELTA, T, H, stride_ot, stride_oh, stride_dot, stride_doh, DV: tl.constexpr,
                   BDV: tl.constexpr, BLOCK_T: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    h = tl.program_id(1)
    dv_ = tl.arange(0, BDV)
    mask = (rows[:, None] < T) & (dv_[None, :] < DV)
    o = tl.load(OUT + rows[:, None].to(tl.int64) * stride_ot + h * stride_oh + dv_[None, :], mask=mask, other=0.0)
    do = tl.load(DO + rows[:, None].to(tl.int64) * stride_dot + h * stride_doh + dv_[None, :], mask=mask, other=0.0)
    tl.store(DELTA + h.to(tl.int64) * T + rows, _sum(o.to(tl.float32) * do.to(tl.float32), 1), mask=rows < T)


# ----------------------------------------------------------------------------------------------
# Backward: dq and the bias-table gradients
# ----------------------------------------------------------------------------------------------
@triton.jit
def _dq_init(h, H, Q, DO, LSE, DELTA, rows, row_ok, T, stride_qt, stride_qh, stride_dot, stride_doh, dq_, dv_,
             lse_shift, DH: tl.constexpr, DV: tl.constexpr, BLOCK: tl.constexpr, BDH: tl.constexpr,
             EVEN_HEADS: tl.constexpr):
    """A head's state; ``lse_shift`` (log2 of the fixed-point scale with DS_SCALED, else 0) comes
    off the log-sum-exp, so that P, dS and everything dq sums from them are that scale times the
    true ones (``attn_bwd_dq``)."""
    hok = row_ok
    if not EVEN_HEADS:
        hok = hok & (h < H)
    q = tl.load(Q + rows[:, None] * stride_qt + h * stride_qh + dq_[None, :],
                mask=hok[:, None] & (dq_[None, :] < DH), other=0.0)
    do = tl.load(DO + rows[:, None] * stride_dot + h * stride_doh + dv_[None, :],
                 mask=hok[:, None] & (dv_[None, :] < DV), other=0.0)
    lse = tl.load(LSE + h.to(tl.int64) * T + rows, mask=hok, other=float("inf")) - lse_shift
    delta = tl.load(DELTA + h.to(tl.int64) * T + rows, mask=hok, other=0.0)
    return (h, q, do, lse, delta, tl.full([BLOCK, BDH], 0.0, tl.float32))


@triton.jit
def _dq_update(st, ds_sum, H, K, V, koff, voff, col_ok, stride_kh, stride_vh, dq_, dv_, bias, ok, qk_scale,
               DH: tl.constexpr, DV: tl.constexpr, FULL: tl.constexpr, EVEN_HEADS: tl.constexpr,
               UPCAST: tl.constexpr, IEEE: tl.constexpr):
    """One key tile for one head: dS, dq += dS k, and dS added to the group's sum."""
    h, q, do, lse, delta, dq = st
    kmask = col_ok[:, None] & _head_mask(h, H, dq_, DH, DH, EVEN_HEADS)
    vmask = col_ok[:, None] & _head_mask(h, H, dv_, DV, DV, EVEN_HEADS)
    even = FULL and EVEN_HEADS and (DH == q.shape[1]) and (DV == do.shape[1])
    k = _load_tile(K + h * stride_kh, koff, kmask, even)
    v = _load_tile(V + h * stride_vh, voff, vmask, even)
    s = _dot(q, tl.trans(k), UPCAST, IEEE) * qk_scale + bias
    p = tl.math.exp2(s - lse[:, None])
    if not FULL:
        p = tl.where(ok, p, 0.0)
    dp = _dot(do, tl.trans(v), UPCAST, IEEE)
    ds = p * (dp - delta[:, None])
    dq += _dot(ds.to(k.dtype), k, UPCAST, IEEE)
    return (h, q, do, lse, delta, dq), ds_sum + ds


@triton.jit
def _dq_self(st, ds_tot, H, K, V, W_POS, W_TIME, rows, is_t, stride_kt, stride_kh, stride_vt, stride_vh, dq_, dv_, P,
             qk_scale, DH: tl.constexpr, DV: tl.constexpr, HAS_POS: tl.constexpr, TS_MODE: tl.constexpr,
             JROW: tl.constexpr, EVEN_HEADS: tl.constexpr):
    """Target rows against themselves; ds_tot collects the group's total (its bias entries)."""
    h, q, do, lse, delta, dq = st
    k_self = tl.load(K + rows[:, None] * stride_kt + h * stride_kh + dq_[None, :],
                     mask=is_t[:, None] & _head_mask(h, H, dq_, DH, DH, EVEN_HEADS), other=0.0)
    v_self = tl.load(V + rows[:, None] * stride_vt + h * stride_vh + dv_[None, :],
                     mask=is_t[:, None] & _head_mask(h, H, dv_, DV, DV, EVEN_HEADS), other=0.0)
    s_self = _self_score(q, k_self, W_POS, W_TIME, P, qk_scale, HAS_POS, TS_MODE, JROW)
    p_self = tl.where(is_t, tl.math.exp2(s_self - lse), 0.0)
    dp_self = _sum(do.to(tl.float32) * v_self.to(tl.float32), axis=1)
    ds_self = p_self * (dp_self - delta)
    dq += ds_self[:, None] * k_self.to(tl.float32)
    return (h, q, do, lse, delta, dq), ds_tot + ds_self


@triton.jit
def _dq_store(st, H, DQ, rows, row_ok, scale, stride_dqt, stride_dqh, dq_, DH: tl.constexpr, ACCUM: tl.constexpr,
              EVEN_HEADS: tl.constexpr):
    h, q, do, lse, delta, dq = st
    hok = row_ok
    if not EVEN_HEADS:
        hok = hok & (h < H)
    mask = hok[:, None] & (dq_[None, :] < DH)
    ptrs = DQ + rows[:, None] * stride_dqt + h * stride_dqh + dq_[None, :]
    dq = dq * scale
    if ACCUM:
        dq += tl.load(ptrs, mask=mask, other=0.0)
    tl.store(ptrs, dq.to(DQ.dtype.element_ty), mask=mask)


@triton.autotune(configs=_configs("dq"), key=_KEY, restore_value=_RESTORE["dq"], prune_configs_by=_PRUNE)
@_group("dq")
@triton.jit
def attn_bwd_dq(Q, K, V, DO, LSE, DELTA, DQ, OFFS, NT, TS, W_POS, W_TIME, DPOS, DTIME, FXP,
                BLK_SEQ, BLK_START, KV_PTR, KV_IDX, KV_FULL,
                stride_qt, stride_qh, stride_kt: tl.constexpr, stride_kh: tl.constexpr, stride_vt: tl.constexpr,
                stride_vh: tl.constexpr, stride_dot, stride_doh,
                stride_dqt, stride_dqh,
                T, H, scale, qk_scale, P, NB, WIN, GLOB, R_DIL, S_CLS, LEN_BUCKET,
                DH: tl.constexpr, DV: tl.constexpr, BLOCK: tl.constexpr, BDH: tl.constexpr, BDV: tl.constexpr,
                NBP: tl.constexpr, GROUP_COLS: tl.constexpr, G: tl.constexpr, EVEN_HEADS: tl.constexpr,
                HAS_POS: tl.constexpr,
                TS_MODE: tl.constexpr, TS_SORTED: tl.constexpr, PASS_B: tl.constexpr, SPARSE: tl.constexpr,
                HAS_WINDOW: tl.constexpr, ACCUM: tl.constexpr, POS_GRAD: tl.constexpr, TIME_GRAD: tl.constexpr,
                FIXED_POINT: tl.constexpr,
                POS_CLAMP: tl.constexpr, NB_CLAMP: tl.constexpr,
                JROW: tl.constexpr, UPCAST: tl.constexpr, IEEE: tl.constexpr,
                INTERP: tl.constexpr, SPLIT: tl.constexpr, MASKED_SPLIT: tl.constexpr, DS_SCALED: tl.constexpr = False):
    pid = tl.program_id(0)
    hg = tl.program_id(1)
    start, s0, L, n, p, i_loc, ci, ai, row_ok = _program_block(BLK_SEQ, BLK_START, OFFS, NT, pid, R_DIL,
                                                              BLOCK, PASS_B)
    if PASS_B:  # pass B's rows are one residue class: neighbouring rows are R_DIL positions apart
        mult = R_DIL
    else:
        mult = 1
    rows = s0 + i_loc
    dq_ = tl.arange(0, BDH)
    dv_ = tl.arange(0, BDV)
    pos_i = tl.minimum(i_loc, n)
    ts_i = _load_ts(TS, rows, row_ok, TS_MODE)
    fxp = tl.load(FXP)
    # DS_SCALED (bf16, fixed point): P computed times the fixed-point scale fxp = 2**e, by taking e
    # off the log-sum-exp, so dS comes scaled and the atomics need no multiply a pair; dq sums the
    # scaled dS in float32 and is divided by fxp at the end (a power of two: exact). The exponent
    # is read from fxp's bits (exact; no libdevice).
    if DS_SCALED:
        lse_shift = (((fxp.to(tl.int32, bitcast=True) >> 23) & 0xFF) - 127).to(tl.float32)
    else:
        lse_shift = 0.0
    acc_t = tl.full([NBP], 0.0, tl.float32)
    states = [_dq_init(hg * G + i, H, Q, DO, LSE, DELTA, rows, row_ok, T, stride_qt, stride_qh, stride_dot,
                       stride_doh, dq_, dv_, lse_shift, DH, DV, BLOCK, BDH, EVEN_HEADS)
              for i in (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)[:G]]
    if not PASS_B:  # targets: their own diagonal (relative position 0, time bucket 0), first
        is_tgt = row_ok & (i_loc >= n)
        ds_tot = tl.full([BLOCK], 0.0, tl.float32)
        for i in tl.static_range(G):
            st, ds_tot = _dq_self(states[i], ds_tot, H, K, V, W_POS, W_TIME, rows, is_tgt, stride_kt, stride_kh,
                                  stride_vt, stride_vh, dq_, dv_, P, qk_scale, DH, DV, HAS_POS, TS_MODE, JROW,
                                  EVEN_HEADS)
            states = states[:i] + [st] + states[i + 1:]
        total = _sum(ds_tot, axis=0)
        if JROW > 0:
            if POS_GRAD or TIME_GRAD:
                _grad_add(DPOS, P - 1, total, total == total, fxp, FIXED_POINT, DS_SCALED)
        else:
            if POS_GRAD:
                _grad_add(DPOS, P - 1, total, total == total, fxp, FIXED_POINT, DS_SCALED)
            if TIME_GRAD:
                acc_t += tl.where(tl.arange(0, NBP) == 0, total, 0.0)
    BN: tl.constexpr = BLOCK // SPLIT  # key columns per sub-tile
    koff0 = _tile_offsets(stride_kt, dq_, BN)
    voff0 = _tile_offsets(stride_vt, dv_, BN)
    e_lo = tl.load(KV_PTR + pid)
    e_full = e_lo + tl.load(KV_FULL + pid)
    e_hi = tl.load(KV_PTR + pid + 1)
    # masked tiles first, then full ones (as in the forward: fewer registers live in the full loop).
    # A key block is walked in SPLIT sub-tiles of BN columns: the registers of a tile (bias,
    # index, dS sum, S, dP) shrink with it, which lets a program carry more heads (that share the
    # look-up and the atomics); dq has no running rescale, so a sub-tile adds no per-row work.
    BNM: tl.constexpr = BN // MASKED_SPLIT
    arm = tl.arange(0, BNM)
    koffm = arm[:, None] * stride_kt + dq_[None, :]
    voffm = arm[:, None] * stride_vt + dv_[None, :]
    for e in range(e_full, e_hi):
        kb = tl.load(KV_IDX + e) >> 1
        for sub in tl.static_range(SPLIT * MASKED_SPLIT):
            kstart = kb * BLOCK + sub * BNM
            pj, j_loc, cj, aj = _rows(kstart, n, R_DIL, BNM, PASS_B)
            col_ok = pj < n
            ts_j = _load_ts(TS, s0 + j_loc, col_ok, TS_MODE)
            bias, bk, idx = _tile_bias(0, mult, pos_i, j_loc, ts_i, ts_j, W_POS, W_TIME, P, NB, BLOCK, BNM,
                                       False, HAS_POS, TS_MODE, POS_CLAMP, NB_CLAMP, JROW, INTERP)
            ok = _pair_mask(row_ok, col_ok, i_loc, j_loc, ci, cj, ai, aj, n, WIN, GLOB, S_CLS, PASS_B, SPARSE,
                            HAS_WINDOW)
            Kt, koff = _tile_base(K, s0, kstart, j_loc, stride_kt, koffm, dq_, PASS_B)
            Vt, voff = _tile_base(V, s0, kstart, j_loc, stride_vt, voffm, dv_, PASS_B)
            ds_sum = tl.full([BLOCK, BNM], -0.0, tl.float32)
            for i in tl.static_range(G):
                st, ds_sum = _dq_update(states[i], ds_sum, H, Kt, Vt, koff, voff, col_ok, stride_kh, stride_vh, dq_,
                                        dv_, bias, ok, qk_scale, DH, DV, False, EVEN_HEADS, UPCAST, IEEE)
                states = states[:i] + [st] + states[i + 1:]
            acc_t = _bias_grad_tile(DPOS, acc_t, ds_sum, idx, bk, ts_i, ts_j, fxp, P, NB, JROW, NBP, False, POS_GRAD,
                                    TIME_GRAD, TS_MODE, NB_CLAMP, FIXED_POINT, INTERP, DS_SCALED)
    for e in range(e_lo, e_full):
        kb = tl.load(KV_IDX + e) >> 1
        for sub in tl.static_range(SPLIT):
            kstart = kb * BLOCK + sub * BN
            pj, j_loc, cj, aj = _rows(kstart, n, R_DIL, BN, PASS_B)
            ts_j = _load_ts_full(TS, s0, kstart, j_loc, TS_MODE, BN, PASS_B)
            delta_pos = _block_delta(start, kstart, n, R_DIL, PASS_B)
            bias, bk, idx = _tile_bias(delta_pos, mult, pos_i, j_loc, ts_i, ts_j, W_POS, W_TIME, P, NB, BLOCK,
                                       BN, True, HAS_POS, TS_MODE, POS_CLAMP, NB_CLAMP, JROW, INTERP, True, TS_SORTED)
            Kt, koff = _tile_base(K, s0, kstart, j_loc, stride_kt, koff0, dq_, PASS_B)
            Vt, voff = _tile_base(V, s0, kstart, j_loc, stride_vt, voff0, dv_, PASS_B)
            # -0.0: x + (-0.0) is x for every x, so the first head's add folds away (+0.0 is not an
            # identity: -0.0 + 0.0 = +0.0), 32 instructions a tile
            ds_sum = tl.full([BLOCK, BN], -0.0, tl.float32)
            for i in tl.static_range(G):
                st, ds_sum = _dq_update(states[i], ds_sum, H, Kt, Vt, koff, voff, pj < n, stride_kh, stride_vh, dq_,
                                        dv_, bias, bias, qk_scale, DH, DV, True, EVEN_HEADS, UPCAST, IEEE)
                states = states[:i] + [st] + states[i + 1:]
            acc_t = _bias_grad_tile(DPOS, acc_t, ds_sum, idx, bk, ts_i, ts_j, fxp, P, NB, JROW, NBP, True, POS_GRAD,
                                    TIME_GRAD, TS_MODE, NB_CLAMP, FIXED_POINT, INTERP, DS_SCALED)
    # the block's rows again: read back rather than kept alive through the loops (registers)
    _s, s0, _L, _n, _p, i_loc, _c, _a, row_ok = _program_block(BLK_SEQ, BLK_START, OFFS, NT,
                                                               _program_id_again(0, INTERP), R_DIL, BLOCK, PASS_B,
                                                               True)
    hg = _program_id_again(1, INTERP)
    if DS_SCALED:  # fxp read again, not kept alive through the loops (registers)
        dq_scale = scale / tl.load(FXP)
    else:
        dq_scale = scale
    for i in tl.static_range(G):
        _h, q, do, lse, delta, dq = states[i]
        _dq_store((hg * G + i, q, do, lse, delta, dq), H, DQ, s0 + i_loc, row_ok, dq_scale, stride_dqt, stride_dqh,
                  dq_, DH, ACCUM, EVEN_HEADS)
    if TIME_GRAD and JROW == 0:
        ids = tl.arange(0, NBP)
        _grad_add(DTIME, ids, acc_t, ids <= NB, fxp, FIXED_POINT, DS_SCALED)


# ----------------------------------------------------------------------------------------------
# Backward: dk, dv
# ----------------------------------------------------------------------------------------------
@triton.jit
def _kv_init(h, H, K, V, cols, key_ok, stride_kt, stride_kh, stride_vt, stride_vh, dq_, dv_, DH: tl.constexpr,
             DV: tl.constexpr, BLOCK: tl.constexpr, BDH: tl.constexpr, BDV: tl.constexpr, EVEN_HEADS: tl.constexpr):
    k = tl.load(K + cols[:, None] * stride_kt + h * stride_kh + dq_[None, :],
                mask=key_ok[:, None] & _head_mask(h, H, dq_, DH, DH, EVEN_HEADS), other=0.0)
    v = tl.load(V + cols[:, None] * stride_vt + h * stride_vh + dv_[None, :],
                mask=key_ok[:, None] & _head_mask(h, H, dv_, DV, DV, EVEN_HEADS), other=0.0)
    return (h, k, v, tl.full([BLOCK, BDH], 0.0, tl.float32), tl.full([BLOCK, BDV], 0.0, tl.float32))


@triton.jit
def _kv_update(st, H, Q, DO, LSE, DELTA, rows, row_ok, qoff, dooff, T, stride_qh, stride_doh, dq_, dv_, biasT, okT,
               qk_scale, DH: tl.constexpr, DV: tl.constexpr, FULL: tl.constexpr, EVEN_HEADS: tl.constexpr,
               UPCAST: tl.constexpr, IEEE: tl.constexpr, row0=0, CONTIG: tl.constexpr = False):
    """One query tile for one head, transposed: S^T = k q^T, dv += P^T dO, dk += dS^T q. CONTIG: the
    rows are ``row0 + arange`` (pass A's full tiles), so LSE and Delta load from one scalar base
    (64-bit row indices per element took registers the two-head config lacked)."""
    h, k, v, dk, dv = st
    hok = row_ok
    if not EVEN_HEADS:
        hok = hok & (h < H)
    even = FULL and EVEN_HEADS and (DH == k.shape[1]) and (DV == v.shape[1])
    q = _load_tile(Q + h * stride_qh, qoff, hok[:, None] & (dq_[None, :] < DH), even)
    do = _load_tile(DO + h * stride_doh, dooff, hok[:, None] & (dv_[None, :] < DV), even)
    if even and CONTIG:
        lse = tl.load((LSE + (h.to(tl.int64) * T + row0)) + tl.arange(0, rows.shape[0]))
        delta = tl.load((DELTA + (h.to(tl.int64) * T + row0)) + tl.arange(0, rows.shape[0]))
    elif CONTIG:
        lse = tl.load((LSE + (h.to(tl.int64) * T + row0)) + tl.arange(0, rows.shape[0]), mask=hok,
                      other=float("inf"))
        delta = tl.load((DELTA + (h.to(tl.int64) * T + row0)) + tl.arange(0, rows.shape[0]), mask=hok, other=0.0)
    elif even:  # a full tile's rows are all behaviors of the sequence, the head complete
        lse = tl.load(LSE + h.to(tl.int64) * T + rows)
        delta = tl.load(DELTA + h.to(tl.int64) * T + rows)
    else:
        lse = tl.load(LSE + h.to(tl.int64) * T + rows, mask=hok, other=float("inf"))
        delta = tl.load(DELTA + h.to(tl.int64) * T + rows, mask=hok, other=0.0)
    sT = _dot(k, tl.trans(q), UPCAST, IEEE) * qk_scale + biasT
    pT = tl.math.exp2(sT - lse[None, :])
    if not FULL:
        pT = tl.where(okT, pT, 0.0)
    dv += _dot(pT.to(do.dtype), do, UPCAST, IEEE)
    dpT = _dot(v, tl.trans(do), UPCAST, IEEE)
    dsT = pT * (dpT - delta[None, :])
    dk += _dot(dsT.to(q.dtype), q, UPCAST, IEEE)
    return (h, k, v, dk, dv)


@triton.jit
def _kv_self(st, H, Q, DO, LSE, DELTA, W_POS, W_TIME, cols, is_t, T, stride_qt, stride_qh, stride_dot, stride_doh,
             dq_, dv_, P, qk_scale, DH: tl.constexpr, DV: tl.constexpr, HAS_POS: tl.constexpr,
             TS_MODE: tl.constexpr, JROW: tl.constexpr, EVEN_HEADS: tl.constexpr):
    """Target keys are seen only by themselves."""
    h, k, v, dk, dv = st
    hok = is_t
    if not EVEN_HEADS:
        hok = hok & (h < H)
    qs = tl.load(Q + cols[:, None] * stride_qt + h * stride_qh + dq_[None, :],
                 mask=hok[:, None] & (dq_[None, :] < DH), other=0.0)
    dos = tl.load(DO + cols[:, None] * stride_dot + h * stride_doh + dv_[None, :],
                  mask=hok[:, None] & (dv_[None, :] < DV), other=0.0)
    lse_s = tl.load(LSE + h.to(tl.int64) * T + cols, mask=hok, other=float("inf"))
    delta_s = tl.load(DELTA + h.to(tl.int64) * T + cols, mask=hok, other=0.0)
    s_self = _self_score(qs, k, W_POS, W_TIME, P, qk_scale, HAS_POS, TS_MODE, JROW)
    p_self = tl.where(hok, tl.math.exp2(s_self - lse_s), 0.0)
    dv += p_self[:, None] * dos.to(tl.float32)
    dp_self = _sum(dos.to(tl.float32) * v.to(tl.float32), axis=1)
    ds_self = p_self * (dp_self - delta_s)
    dk += ds_self[:, None] * qs.to(tl.float32)
    return (h, k, v, dk, dv)


@triton.jit
def _kv_store(st, H, DK, DVAL, cols, key_ok, scale, stride_dkt, stride_dkh, stride_dvt, stride_dvh, dq_, dv_,
              DH: tl.constexpr, DV: tl.constexpr, ACCUM: tl.constexpr, EVEN_HEADS: tl.constexpr):
    h, k, v, dk, dv = st
    hok = key_ok
    if not EVEN_HEADS:
        hok = hok & (h < H)
    kmask = hok[:, None] & (dq_[None, :] < DH)
    vmask = hok[:, None] & (dv_[None, :] < DV)
    dk_ptrs = DK + cols[:, None] * stride_dkt + h * stride_dkh + dq_[None, :]
    dv_ptrs = DVAL + cols[:, None] * stride_dvt + h * stride_dvh + dv_[None, :]
    dk = dk * scale
    if ACCUM:
        dk += tl.load(dk_ptrs, mask=kmask, other=0.0)
        dv += tl.load(dv_ptrs, mask=vmask, other=0.0)
    tl.store(dk_ptrs, dk.to(DK.dtype.element_ty), mask=kmask)
    tl.store(dv_ptrs, dv.to(DVAL.dtype.element_ty), mask=vmask)


@triton.autotune(configs=_configs("dkdv"), key=_KEY, restore_value=_RESTORE["dkdv"], prune_configs_by=_PRUNE)
@_group("dkdv")
@triton.jit
def attn_bwd_dkdv(Q, K, V, DO, LSE, DELTA, DK, DVAL, OFFS, NT, TS, W_POS, W_TIME,
                  BLK_SEQ, BLK_START, Q_PTR, Q_IDX, Q_FULL,
                  stride_qt: tl.constexpr, stride_qh: tl.constexpr, stride_kt, stride_kh, stride_vt, stride_vh,
                  stride_dot: tl.constexpr, stride_doh: tl.constexpr,
                  stride_dkt, stride_dkh, stride_dvt, stride_dvh,
                  T, H, scale, qk_scale, P, NB, WIN, GLOB, R_DIL, S_CLS, LEN_BUCKET,
                  DH: tl.constexpr, DV: tl.constexpr, BLOCK: tl.constexpr, BDH: tl.constexpr, BDV: tl.constexpr,
                  GROUP_COLS: tl.constexpr, G: tl.constexpr, EVEN_HEADS: tl.constexpr, HAS_POS: tl.constexpr,
                  TS_MODE: tl.constexpr, TS_SORTED: tl.constexpr,
                  PASS_B: tl.constexpr, SPARSE: tl.constexpr, HAS_WINDOW: tl.constexpr, ACCUM: tl.constexpr,
                  POS_CLAMP: tl.constexpr, NB_CLAMP: tl.constexpr,
                  JROW: tl.constexpr, UPCAST: tl.constexpr, IEEE: tl.constexpr,
                  INTERP: tl.constexpr, SPLIT: tl.constexpr, MASKED_SPLIT: tl.constexpr):
    pid = tl.program_id(0)
    hg = tl.program_id(1)
    # key_ok: every key row of the block (target rows get their own diagonal below)
    start, s0, L, n, pj, j_loc, cj, aj, key_ok = _program_block(BLK_SEQ, BLK_START, OFFS, NT, pid, R_DIL,
                                                               BLOCK, PASS_B)
    if PASS_B:
        mult = R_DIL
    else:
        mult = 1
    col_ok = pj < n  # keys seen by other rows are behaviors
    cols = s0 + j_loc
    dq_ = tl.arange(0, BDH)
    dv_ = tl.arange(0, BDV)
    ts_j = _load_ts(TS, cols, key_ok, TS_MODE)
    states = [_kv_init(hg * G + i, H, K, V, cols, key_ok, stride_kt, stride_kh, stride_vt, stride_vh, dq_, dv_,
                       DH, DV, BLOCK, BDH, BDV, EVEN_HEADS) for i in (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13,
                                                                      14, 15)[:G]]
    if not PASS_B:  # target keys are seen only by themselves (first)
        is_t = key_ok & (j_loc >= n)
        for i in tl.static_range(G):
            st = _kv_self(states[i], H, Q, DO, LSE, DELTA, W_POS, W_TIME, cols, is_t, T, stride_qt, stride_qh,
                          stride_dot, stride_doh, dq_, dv_, P, qk_scale, DH, DV, HAS_POS, TS_MODE, JROW, EVEN_HEADS)
            states = states[:i] + [st] + states[i + 1:]
    e_lo = tl.load(Q_PTR + pid)
    e_full = e_lo + tl.load(Q_FULL + pid)
    e_hi = tl.load(Q_PTR + pid + 1)
    # Each query block is walked in sub-tiles of BM rows (SPLIT a block; SPLIT * MASKED_SPLIT a masked
    # one), one a loop iteration: a runtime loop, not an unrolled one (unrolled, the compiler
    # overlapped two sub-tiles and two heads spilled 64 B).
    BM: tl.constexpr = BLOCK // SPLIT  # query rows per sub-tile (full tiles)
    qoff0 = _tile_offsets(stride_qt, dq_, BM)
    dooff0 = _tile_offsets(stride_dot, dv_, BM)
    for e2 in range(e_lo * SPLIT, e_full * SPLIT):
        qb = tl.load(Q_IDX + e2 // SPLIT) >> 1
        qstart = qb * BLOCK + (e2 % SPLIT) * BM
        p, i_loc, ci, ai = _rows(qstart, n, R_DIL, BM, PASS_B)
        row_ok = p < L
        if PASS_B:
            row_ok = p < n
        rows = s0 + i_loc
        ts_i = _load_ts_full(TS, s0, qstart, i_loc, TS_MODE, BM, PASS_B)
        # the transposed tile [keys, queries]: bias^T (Toeplitz with the roles of a and b swapped)
        posT = _toeplitz_index(_block_delta(qstart, start, n, R_DIL, PASS_B), mult, P, BLOCK, BM, True,
                               POS_CLAMP)
        biasT, _bk, _idx = _bias_lookup(posT, ts_j, ts_i, W_POS, W_TIME, NB, JROW, HAS_POS, TS_MODE, NB_CLAMP,
                                        INTERP, True, -TS_SORTED)
        Qt, qoff = _tile_base(Q, s0, qstart, i_loc, stride_qt, qoff0, dq_, PASS_B)
        DOt, dooff = _tile_base(DO, s0, qstart, i_loc, stride_dot, dooff0, dv_, PASS_B)
        for i in tl.static_range(G):
            st = _kv_update(states[i], H, Qt, DOt, LSE, DELTA, rows, row_ok, qoff, dooff, T, stride_qh,
                            stride_doh, dq_, dv_, biasT, biasT, qk_scale, DH, DV, True, EVEN_HEADS, UPCAST, IEEE,
                            s0 + qstart, not PASS_B)
            states = states[:i] + [st] + states[i + 1:]
    # what only the masked tiles need, read again rather than kept alive through the full loop
    start, s0, L, n, pj, j_loc, cj, aj, key_ok = _program_block(BLK_SEQ, BLK_START, OFFS, NT,
                                                               _program_id_again(0, INTERP), R_DIL, BLOCK, PASS_B,
                                                               True)
    col_ok = pj < n
    ts_j = _load_ts(TS, s0 + j_loc, key_ok, TS_MODE)
    BMM: tl.constexpr = BM // MASKED_SPLIT  # query rows per sub-tile (masked tiles)
    arm = tl.arange(0, BMM)
    qoffm = arm[:, None] * stride_qt + dq_[None, :]
    dooffm = arm[:, None] * stride_dot + dv_[None, :]
    NSUB: tl.constexpr = SPLIT * MASKED_SPLIT
    for e2 in range(e_full * NSUB, e_hi * NSUB):
        qb = tl.load(Q_IDX + e2 // NSUB) >> 1
        qstart = qb * BLOCK + (e2 % NSUB) * BMM
        p, i_loc, ci, ai = _rows(qstart, n, R_DIL, BMM, PASS_B)
        row_ok = p < L
        if PASS_B:
            row_ok = p < n
        rows = s0 + i_loc
        ts_i = _load_ts(TS, rows, row_ok, TS_MODE)
        pos_i = tl.minimum(i_loc, n)
        # always clamped: pairs this tile does not hold reach beyond the table (the look-up is unmasked)
        relT = tl.minimum(tl.maximum(pos_i[None, :] - j_loc[:, None], -(P - 1)), P - 1)
        biasT, _bk, _idx = _bias_lookup((j_loc * 0, relT + (P - 1)), ts_j, ts_i, W_POS, W_TIME, NB, JROW,
                                        HAS_POS, TS_MODE, NB_CLAMP, INTERP)
        okT = tl.trans(_pair_mask(row_ok, col_ok, i_loc, j_loc, ci, cj, ai, aj, n, WIN, GLOB, S_CLS, PASS_B,
                                  SPARSE, HAS_WINDOW))
        Qt, qoff = _tile_base(Q, s0, qstart, i_loc, stride_qt, qoffm, dq_, PASS_B)
        DOt, dooff = _tile_base(DO, s0, qstart, i_loc, stride_dot, dooffm, dv_, PASS_B)
        for i in tl.static_range(G):
            st = _kv_update(states[i], H, Qt, DOt, LSE, DELTA, rows, row_ok, qoff, dooff, T, stride_qh,
                            stride_doh, dq_, dv_, biasT, okT, qk_scale, DH, DV, False, EVEN_HEADS, UPCAST, IEEE,
                            s0 + qstart, not PASS_B)
            states = states[:i] + [st] + states[i + 1:]
    # the block's columns and head group again: read back rather than kept alive through the loops
    _s, s0, _L, _n, _p, j_loc, _c, _a, key_ok = _program_block(BLK_SEQ, BLK_START, OFFS, NT,
                                                               _program_id_again(0, INTERP), R_DIL, BLOCK,
                                                               PASS_B, True)
    hg = _program_id_again(1, INTERP)
    for i in tl.static_range(G):
        _h, k, v, dk, dv = states[i]
        _kv_store((hg * G + i, k, v, dk, dv), H, DK, DVAL, s0 + j_loc, key_ok, scale, stride_dkt, stride_dkh,
                  stride_dvt, stride_dvh, dq_, dv_, DH, DV, ACCUM, EVEN_HEADS)
