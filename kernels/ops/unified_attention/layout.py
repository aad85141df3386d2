"""Block layouts of the fused attention kernels: which key blocks each query block visits.

A layout is built once per batch shape (cached on the identity of the offsets / num_targets
tensors) analytically from offsets and the pattern, with vectorized torch ops on the tensors'
device; its cost grows with the number of listed blocks, never with the number of token pairs.

Two passes cover the allowed pairs of SPEC section 7 without overlap:

* **pass A** (original row order): causal pairs (dense pattern), or window pairs ``i - j < W``
  and global pairs ``j < G``; plus every target row against every behavior of its sequence.
  (The target's own diagonal is handled in-kernel, not as a listed block.)
* **pass B** (rows reordered by residue class ``i mod r``): the dilated pairs
  ``(i - j) % r == 0`` that pass A does not hold. In the reordered layout the rows of one class
  are contiguous, so a query block reads only its class's keys and the work falls as 1/r.

Positions in pass B: for a sequence with n behaviors, ``q, R = divmod(n, r)``; class c has
``q + (c < R)`` rows starting at ``c*q + min(c, R)``; permuted position ``start_c + a`` holds
behavior ``i = c + a*r``.

Every list entry is ``block * 2 + full`` where ``full`` means every pair of the tile is allowed
(the kernel then skips the element-wise mask). ``kv_*`` lists serve the forward and dq kernels
(query block -> key blocks), ``q_*`` lists the dk/dv kernel (key block -> query blocks).
"""
from __future__ import annotations

import collections
import hashlib
import threading
from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch

from .pattern import DENSE, AttentionPattern


@dataclass
class PassLayout:
    """One pass. All index tensors are int32 on the device of the attention inputs."""

    name: str  # "A" or "B"
    block: int
    blk_seq: torch.Tensor  # [nb] sequence of each block (query and key blocks share the partition)
    blk_start: torch.Tensor  # [nb] first row (pass A) / first permuted position (pass B) of each block
    kv_ptr: torch.Tensor  # [nb+1] CSR row pointers: query block -> key blocks
    kv_idx: torch.Tensor  # [nnz] local key block * 2 + full
    q_ptr: torch.Tensor  # [nb+1] CSR: key block -> query blocks
    q_idx: torch.Tensor  # [nnz] local query block * 2 + full
    kv_full: torch.Tensor  # [nb] number of full entries (listed first) of each query block
    q_full: torch.Tensor  # [nb] number of full entries (listed first) of each key block

    @property
    def num_blocks(self) -> int:
        return self.blk_seq.numel()

    @property
    def nnz(self) -> int:
        return self.kv_idx.numel()

    def entries(self) -> List[Tuple[int, int, int, bool]]:
        """(sequence, query block, key block, full) for every listed tile (host copy; tests)."""
        seq = self.blk_seq.tolist()
        start = self.blk_start.tolist()
        ptr = self.kv_ptr.tolist()
        idx = self.kv_idx.tolist()
        out = []
        for b in range(len(seq)):
            for e in range(ptr[b], ptr[b + 1]):
                out.append((seq[b], start[b] // self.block, idx[e] >> 1, bool(idx[e] & 1)))
        return out


@dataclass
class AttentionLayout:
    """Both passes of one (batch shape, pattern, block size). ``pattern`` is the effective
    pattern (dense when the requested one allows every causal pair of this batch)."""

    block: int
    pass_a: PassLayout
    pass_b: Optional[PassLayout]
    pattern: AttentionPattern
    max_len: int
    lengths: torch.Tensor  # int64 [B] on device
    num_behaviors: torch.Tensor  # int64 [B] on device

    def visited_tiles(self) -> int:
        return self.pass_a.nnz + (0 if self.pass_b is None else self.pass_b.nnz)

    def flops(self, heads: int, head_dim: int, value_dim: int) -> dict:
        """FLOPs of the forward: visited tiles (what the kernels compute) and the allowed pairs of
        a dense causal layout (what a dense kernel would compute). 2 FLOPs per multiply-add."""
        B2 = self.block * self.block
        per_pair = 2 * (head_dim + value_dim) * heads
        n = self.num_behaviors
        L = self.lengths
        nt = L - n
        dense_pairs = int((n * (n + 1) // 2 + nt * (n + 1)).sum())
        return {
            "visited_tiles": self.visited_tiles(),
            "visited_flops": self.visited_tiles() * B2 * per_pair,
            "dense_causal_flops": dense_pairs * per_pair,
        }


def _cdiv(a, b):
    return (a + b - 1) // b


def _expand(owner_count: torch.Tensor, device) -> Tuple[torch.Tensor, torch.Tensor]:
    """For counts [m] -> (owner index [sum], rank within owner [sum]). One host sync (the sum)."""
    total = int(owner_count.sum())
    owner = torch.repeat_interleave(torch.arange(owner_count.numel(), device=device), owner_count,
                                    output_size=total)
    starts = torch.cumsum(owner_count, 0) - owner_count
    rank = torch.arange(total, device=device) - starts[owner]
    return owner, rank


def _blocks(count_per_seq: torch.Tensor, block: int, device):
    """Partition each sequence's ``count`` rows into blocks: (seq [nb], start [nb])."""
    nblk = _cdiv(count_per_seq, block)
    seq, rank = _expand(nblk, device)
    return seq, rank * block


def _csr(owner: torch.Tensor, num_owners: int) -> torch.Tensor:
    counts = torch.bincount(owner, minlength=num_owners)
    return torch.cat([torch.zeros(1, dtype=torch.int64, device=owner.device), torch.cumsum(counts, 0)])


def _finish(name, block, blk_seq, blk_start, q_owner, kb, full, blk_base) -> PassLayout:
    """Entries (owning query block, local key block, full), per query block the full tiles first
    (key blocks ascending), then the masked ones: the kernels run them in two loops, the first
    without mask code. The transposed lists (key block -> query blocks) are ordered the same way."""
    nb = blk_seq.numel()
    f = full.to(torch.int64)
    # full first within an owner: sort by (owner, not full, key block); entries come by owner
    span = int(kb.max()) + 1 if kb.numel() else 1
    order = torch.sort(q_owner * (2 * span) + (1 - f) * span + kb, stable=True).indices
    q_owner, kb, f = q_owner[order], kb[order], f[order]
    code = kb * 2 + f
    kv_ptr = _csr(q_owner, nb)
    kv_full = torch.bincount(q_owner, weights=f, minlength=nb).to(torch.int64) if nb else f.new_zeros(0)
    # transposed: key block (global id) -> query blocks, full first, query blocks ascending
    k_global = blk_base[blk_seq[q_owner]] + kb
    q_local = q_owner - blk_base[blk_seq[q_owner]]
    qspan = int(q_local.max()) + 1 if q_local.numel() else 1
    torder = torch.sort(k_global * (2 * qspan) + (1 - f) * qspan + q_local, stable=True).indices
    q_code = (q_local * 2 + f)[torder]
    q_ptr = _csr(k_global[torder], nb)
    q_full = torch.bincount(k_global, weights=f, minlength=nb).to(torch.int64) if nb else f.new_zeros(0)
    i32 = torch.int32
    return PassLayout(name, block, blk_seq.to(i32), blk_start.to(i32), kv_ptr.to(i32), code.to(i32),
                      q_ptr.to(i32), q_code.to(i32), kv_full.to(i32), q_full.to(i32))


def _build_pass_a(L, n, block, pattern: AttentionPattern) -> PassLayout:
    window, num_global, sparse = pattern.window, pattern.num_global, pattern.sparse
    device = L.device
    blk_seq, r0 = _blocks(L, block, device)
    nb = blk_seq.numel()
    blk_base = torch.cumsum(_cdiv(L, block), 0) - _cdiv(L, block)
    Ls, ns = L[blk_seq], n[blk_seq]
    qb = r0 // block
    r1 = torch.minimum(r0 + block, Ls)
    has_targets = r1 > ns
    nkb = _cdiv(ns, block)  # behavior key blocks of the sequence
    zero = torch.zeros_like(qb)
    # interval 1: [lo1, hi1), interval 2: [lo2, hi2) with hi1 <= lo2
    if not sparse:
        lo1, hi1 = zero, torch.minimum(qb + 1, nkb)
        lo2 = hi2 = hi1
    else:
        g_hi = torch.minimum(_cdiv(torch.clamp(ns, max=num_global), block), qb + 1)
        if window is not None:
            w_lo = torch.clamp(r0 - window + 1, min=0) // block
            w_hi = torch.minimum(qb + 1, nkb)
            merged = g_hi >= w_lo
            lo1 = zero
            hi1 = torch.where(merged, w_hi, g_hi)
            lo2 = torch.where(merged, w_hi, w_lo)
            hi2 = w_hi
        else:
            lo1, hi1 = zero, g_hi
            lo2 = hi2 = hi1
    # target blocks see every behavior block
    lo1 = torch.where(has_targets, zero, lo1)
    hi1 = torch.where(has_targets, nkb, hi1)
    lo2 = torch.where(has_targets, nkb, lo2)
    hi2 = torch.where(has_targets, nkb, hi2)
    len1 = (hi1 - lo1).clamp(min=0)
    len2 = (hi2 - lo2).clamp(min=0)
    owner, rank = _expand(len1 + len2, device)
    kb = torch.where(rank < len1[owner], lo1[owner] + rank, lo2[owner] + rank - len1[owner])
    # full tiles: all key columns are valid behaviors and every behavior row sees every column
    c0 = kb * block
    cols_valid = c0 + block <= ns[owner]
    o_r0, o_r1, o_n = r0[owner], r1[owner], ns[owner]
    i_hi = torch.minimum(o_r1, o_n) - 1
    causal_all = c0 + block - 1 <= o_r0
    if not sparse:
        beh_full = causal_all
    else:
        covered = c0 + block <= num_global  # every column is a global token
        if window is not None:
            # the window covers [i - W + 1, i]; with the globals [0, G) the union is [0, i] once G
            # reaches the window's start of the block's last behavior row
            covered = covered | (i_hi - c0 < window) | (i_hi - window + 1 <= num_global)
        beh_full = causal_all & covered
    # full: a complete block of behavior rows (target rows sit at position n: the kernels' Toeplitz
    # position bias of full tiles does not hold for them; rows past the end would need masks) and
    # every pair allowed
    full = cols_valid & (o_r0 + block <= o_n) & beh_full
    return _finish("A", block, blk_seq, r0, owner, kb, full, blk_base)


def _class_of(p, n, r):
    """Residue class and index within the class of permuted position p (sequences of n rows)."""
    qn, R = n // r, n % r
    big = R * (qn + 1)
    in_big = p < big
    qn_safe = torch.clamp(qn, min=1)
    c = torch.where(in_big, p // (qn + 1), R + (p - big) // qn_safe)
    a = torch.where(in_big, p % (qn + 1), (p - big) % qn_safe)
    return c, a


def _class_start(c, n, r):
    qn, R = n // r, n % r
    return c * qn + torch.minimum(c, R)


def _build_pass_b(n, block, pattern: AttentionPattern) -> PassLayout:
    window, num_global = pattern.window, pattern.num_global
    device = n.device
    r = pattern.dilation
    s = 0 if window is None else _cdiv(window, r)  # class distance that leaves the window
    blk_seq, p0 = _blocks(n, block, device)
    blk_base = torch.cumsum(_cdiv(n, block), 0) - _cdiv(n, block)
    ns = n[blk_seq]
    p1 = torch.minimum(p0 + block, ns)
    c_first, _ = _class_of(p0, ns, r)
    c_last, _ = _class_of(p1 - 1, ns, r)
    # one interval of key positions per (query block, class spanned)
    owner, rank = _expand(c_last - c_first + 1, device)
    c = c_first[owner] + rank
    o_n = ns[owner]
    start_c = _class_start(c, o_n, r)
    size_c = o_n // r + (c < o_n % r).to(torch.int64)
    a_hi = torch.minimum(p1[owner], start_c + size_c) - 1 - start_c  # last row of class c in the block
    aj_min = torch.clamp(_cdiv(num_global - c, r), min=0)  # first key of the class outside the globals
    aj_max = a_hi - s
    ok = aj_max >= aj_min
    k_lo = (start_c + aj_min) // block
    k_hi = (start_c + aj_max) // block + 1
    cnt = torch.where(ok, k_hi - k_lo, torch.zeros_like(k_lo))
    sub_owner, sub_rank = _expand(cnt, device)
    q_owner = owner[sub_owner]
    kb = k_lo[sub_owner] + sub_rank
    # dedupe (query block, key block) pairs shared by neighbouring classes
    key = q_owner * (int(kb.max()) + 1 if kb.numel() else 1) + kb
    key = torch.unique(key, sorted=True)
    width = int(kb.max()) + 1 if kb.numel() else 1
    q_owner, kb = key // width, key % width
    # full: rows and columns in one class, every row >= s classes-steps past every column, no globals
    o_p0, o_p1, o_n = p0[q_owner], p1[q_owner], ns[q_owner]
    k0 = kb * block
    ci0, ai0 = _class_of(o_p0, o_n, r)
    ci1, _ = _class_of(o_p1 - 1, o_n, r)
    k_in = k0 + block <= o_n
    k1 = torch.minimum(k0 + block, o_n) - 1
    cj0, aj0 = _class_of(k0, o_n, r)
    cj1, aj1 = _class_of(k1, o_n, r)
    one_class = (ci0 == ci1) & (cj0 == cj1) & (ci0 == cj0)
    full = k_in & one_class & (ai0 - aj1 >= s) & (aj0 >= torch.clamp(_cdiv(num_global - cj0, r), min=0))
    return _finish("B", block, blk_seq, p0, q_owner, kb, full, blk_base)


def build_layout(offsets: torch.Tensor, num_targets: Optional[torch.Tensor], block: int,
                 pattern: AttentionPattern = DENSE, lengths: Optional[torch.Tensor] = None) -> AttentionLayout:
    """Build both passes for a batch. Host syncs: a handful of sizes (never per-sequence loops)."""
    L = offsets[1:] - offsets[:-1] if lengths is None else lengths
    L = L.to(torch.int64)
    nt = torch.zeros_like(L) if num_targets is None else num_targets.to(torch.int64)
    n = L - nt
    max_n = int(n.max()) if n.numel() else 0
    max_len = int(L.max()) if L.numel() else 0
    pattern = pattern.effective(max_n)
    pass_a = _build_pass_a(L, n, block, pattern)
    pass_b = None
    if pattern.dilation is not None:
        pass_b = _build_pass_b(n, block, pattern)
    return AttentionLayout(block, pass_a, pass_b, pattern, max_len, L, n)


class LayoutCache:
    """Small LRUs of layouts: by identity and version of offsets / num_targets (no host sync), and
    on a miss there by content (the values of offsets and num_targets, one small copy to the host).

    A layout depends only on the values of the lengths and target counts (and the block and
    pattern), so a training loop whose batches repeat a shape (fixed-length histories, or lengths
    that recur) builds it once: on the H200 a build is 2.4-5.2 ms at B=64, L=4096 (160-430 small
    ops), more than a windowed forward. The identity cache keeps the key tensors alive, so a freed
    tensor's id can never alias a live entry.
    """

    def __init__(self, capacity: int = 16):
        self.capacity = capacity
        self._items: "collections.OrderedDict" = collections.OrderedDict()
        self._by_content: "collections.OrderedDict" = collections.OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.content_hits = self.misses = 0

    @staticmethod
    def content_key(offsets, num_targets, block, pattern: AttentionPattern) -> tuple:
        """(digest of the values, block, pattern, device): equal for batches of equal shape."""
        h = hashlib.blake2b(digest_size=16)
        h.update(offsets.detach().to("cpu", torch.int64).numpy().tobytes())
        h.update(b"|" if num_targets is None else num_targets.detach().to("cpu", torch.int64).numpy().tobytes())
        return h.digest(), offsets.numel(), block, pattern, str(offsets.device)

    def _put(self, table, key, value):
        table[key] = value
        while len(table) > self.capacity:
            table.popitem(last=False)

    def get(self, offsets, num_targets, block, pattern: AttentionPattern, validate=None) -> AttentionLayout:
        """The cached layout, or a new one (``validate()`` runs first on an identity miss)."""
        key = (id(offsets), offsets._version, None if num_targets is None else (id(num_targets), num_targets._version),
               block, pattern, offsets.device)
        with self._lock:
            item = self._items.get(key)
            if item is not None:
                self._items.move_to_end(key)
                self.hits += 1
                return item[0]
        if validate is not None:
            validate()
        ckey = self.content_key(offsets, num_targets, block, pattern)
        with self._lock:
            layout = self._by_content.get(ckey)
            if layout is not None:
                self._by_content.move_to_end(ckey)
                self.content_hits += 1
                self._put(self._items, key, (layout, offsets, num_targets))
                return layout
        layout = build_layout(offsets, num_targets, block, pattern)
        with self._lock:
            self.misses += 1
            self._put(self._items, key, (layout, offsets, num_targets))
            self._put(self._by_content, ckey, layout)
        return layout

    def clear(self):
        with self._lock:
            self._items.clear()
            self._by_content.clear()


LAYOUT_CACHE = LayoutCache()
