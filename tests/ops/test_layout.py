"""Block layouts: each query block lists exactly the key blocks that hold an allowed pair of its
pass, full flags are right, transposed lists mirror the forward lists, and the visited work falls
with the pattern's density (about 1/r for dilation r)."""
import itertools

import pytest
import torch

from suan_kernels.ops.unified_attention import DENSE, AttentionPattern
from suan_kernels.ops.unified_attention.layout import LayoutCache, build_layout


def _pairs_pass_a(L, n, window, dilation, num_global):
    """Allowed (i, j) pairs held by pass A, in original local indices."""
    sparse = window is not None or dilation is not None
    out = set()
    for i in range(L):
        for j in range(n):
            if i >= n:
                out.add((i, j))
            elif j <= i and (not sparse or (window is not None and i - j < window) or j < num_global):
                out.add((i, j))
    return out


def _perm(n, r):
    """permuted position -> original behavior index (pass B order)."""
    order = sorted(range(n), key=lambda i: (i % r, i // r))
    return order


def _pairs_pass_b(n, window, dilation, num_global):
    """Allowed pairs held by pass B, in permuted positions."""
    order = _perm(n, dilation)
    out = set()
    for p, i in enumerate(order):
        for pj, j in enumerate(order):
            if j <= i and (i - j) % dilation == 0 and not (window is not None and i - j < window) and j >= num_global:
                out.add((p, pj))
    return out


def _check_pass(pl, pairs_by_seq, rows_by_seq, block, behaviors_by_seq=None):
    """``behaviors_by_seq`` (pass A): a full tile also has every row a behavior."""
    listed = {}
    for seq, qb, kb, full in pl.entries():
        assert (seq, qb, kb) not in listed, "duplicate entry"
        listed[(seq, qb, kb)] = full
    # per query block: full entries first (their count in kv_full), key blocks ascending in each part
    ptr, idx, nfull = pl.kv_ptr.tolist(), pl.kv_idx.tolist(), pl.kv_full.tolist()
    assert ptr[0] == 0  # the forward reads it after its loops as a known 0 (_block_id_after_loops)
    for b in range(len(nfull)):
        codes = idx[ptr[b]:ptr[b + 1]]
        flags = [c & 1 for c in codes]
        assert flags == sorted(flags, reverse=True) and sum(flags) == nfull[b]
        assert [c >> 1 for c in codes[:nfull[b]]] == sorted(c >> 1 for c in codes[:nfull[b]])
        assert [c >> 1 for c in codes[nfull[b]:]] == sorted(c >> 1 for c in codes[nfull[b]:])
    expected = {}
    for seq, pairs in pairs_by_seq.items():
        tiles = {}
        for (i, j) in pairs:
            tiles.setdefault((i // block, j // block), set()).add((i, j))
        for (qb, kb), held in tiles.items():
            rows = [i for i in range(qb * block, min((qb + 1) * block, rows_by_seq[seq]))]
            cols = list(range(kb * block, kb * block + block))
            full = all((i, j) in pairs for i in rows for j in cols)
            if behaviors_by_seq is not None:  # a complete block of behavior rows
                full = full and (qb + 1) * block <= behaviors_by_seq[seq]
            expected[(seq, qb, kb)] = full
    assert set(listed) == set(expected), (sorted(set(listed) ^ set(expected)))[:10]
    for key, full in expected.items():
        assert listed[key] == full, (key, full)
    # transposed lists: same tiles, grouped by key block, query blocks ascending
    seq = pl.blk_seq.tolist()
    start = pl.blk_start.tolist()
    ptr, idx = pl.q_ptr.tolist(), pl.q_idx.tolist()
    transposed = {}
    qfull = pl.q_full.tolist()
    for b in range(len(seq)):
        codes = idx[ptr[b]:ptr[b + 1]]
        assert [c & 1 for c in codes] == [1] * qfull[b] + [0] * (len(codes) - qfull[b])
        for part in (codes[:qfull[b]], codes[qfull[b]:]):
            assert [c >> 1 for c in part] == sorted(c >> 1 for c in part)
        for e in range(ptr[b], ptr[b + 1]):
            transposed[(seq[b], idx[e] >> 1, start[b] // pl.block)] = bool(idx[e] & 1)
    assert transposed == listed


CASES = list(itertools.product(
    [None, 1, 3, 7, 16, 100],  # window
    [None, 1, 2, 5, 19, 200],  # dilation
    [0, 2, 17],  # num_global
))


@pytest.mark.parametrize("window,dilation,num_global", CASES)
def test_lists_hold_exactly_the_allowed_tiles(window, dilation, num_global):
    block = 8
    lengths = [0, 1, 9, 30, 61, 40]
    targets = [0, 1, 0, 4, 3, 40]
    offsets = torch.tensor([0] + list(itertools.accumulate(lengths)))
    layout = build_layout(offsets, torch.tensor(targets), block, AttentionPattern(window, dilation, num_global))
    eff = AttentionPattern(window, dilation, num_global).effective(max(L - t for L, t in zip(lengths, targets)))
    w, d, g = eff.window, eff.dilation, eff.num_global
    pairs_a = {b: _pairs_pass_a(L, L - t, w, d, g) for b, (L, t) in enumerate(zip(lengths, targets))}
    _check_pass(layout.pass_a, pairs_a, dict(enumerate(lengths)), block,
                {b: L - t for b, (L, t) in enumerate(zip(lengths, targets))})
    if d is None:
        assert layout.pass_b is None
    else:
        pairs_b = {b: _pairs_pass_b(L - t, w, d, g) for b, (L, t) in enumerate(zip(lengths, targets))}
        _check_pass(layout.pass_b, pairs_b, {b: L - t for b, (L, t) in enumerate(zip(lengths, targets))}, block)


def test_dilated_work_falls_as_one_over_r():
    L, block = 4096, 64
    offsets = torch.tensor([0, L, 2 * L])
    dense = build_layout(offsets, None, block).flops(4, 64, 64)
    prev = None
    for r in (2, 4, 8, 16, 32):
        f = build_layout(offsets, None, block, AttentionPattern(dilation=r)).flops(4, 64, 64)
        ratio = f["visited_flops"] / dense["visited_flops"]
        assert ratio < 1.5 / r, (r, ratio)  # about 1/r of the dense causal tiles
        if prev is not None:
            assert f["visited_flops"] < prev
        prev = f["visited_flops"]


def test_window_work_falls_with_density():
    L, block = 4096, 64
    offsets = torch.tensor([0, L])
    dense = build_layout(offsets, None, block).flops(2, 64, 64)["visited_flops"]
    for W in (32, 128, 512):
        f = build_layout(offsets, None, block, AttentionPattern(window=W)).flops(2, 64, 64)["visited_flops"]
        ideal = (W + block) / (L / 2)
        assert f / dense <= 1.3 * ideal + 0.01, (W, f / dense, ideal)


def test_targets_visit_every_behavior_block():
    layout = build_layout(torch.tensor([0, 100]), torch.tensor([10]), 16, AttentionPattern(window=4))
    tiles = {(qb, kb) for _, qb, kb, _ in layout.pass_a.entries()}
    n_blocks = -(-90 // 16)
    for kb in range(n_blocks):
        assert (90 // 16 + 1, kb) in tiles or (90 // 16, kb) in tiles


def test_cache_reuses_layouts_by_identity_then_by_content():
    cache = LayoutCache(capacity=2)
    offsets = torch.tensor([0, 10, 30])
    nt = torch.tensor([1, 2])
    a = cache.get(offsets, nt, 16, DENSE)
    assert cache.get(offsets, nt, 16, DENSE) is a  # identity and version: no host sync
    assert cache.get(offsets, nt, 16, AttentionPattern(window=4)) is not a
    offsets.add_(0)  # a new version with the same values: found by content
    assert cache.get(offsets, nt, 16, DENSE) is a
    assert cache.get(offsets.clone(), nt.clone(), 16, DENSE) is a  # another batch of the same shape
    offsets[2] = 29  # other values: a new layout
    b = cache.get(offsets, nt, 16, DENSE)
    assert b is not a and b.lengths.tolist() == [10, 19]
    assert cache.get(offsets, None, 16, DENSE) is not b  # the targets are part of the key
    assert cache.get(offsets, nt, 32, DENSE) is not b  # and the block
    assert cache.hits == 1 and cache.content_hits == 2 and cache.misses == 5
