"""The reference op against the explicit loop oracle (``naive.py``) on generated and hand-picked
cases, its gradients, the contract's validation, and its memory/cost structure."""
import pytest
import torch
from hypothesis import given, settings

import suan_kernels as kernels
from suan_kernels.ops.unified_attention import AttentionPattern
from suan_kernels.ops.unified_attention import reference as ref
from suan_kernels.ops.unified_attention.naive import dense_attention
from support.closeness import assert_close
from support.jagged import call, make_inputs
from support.strategies import examples, op_cases

LENGTHS = [5, 0, 1, 37, 70, 3, 12]
TARGETS = [2, 0, 1, 0, 5, 3, 0]

PATTERNS = [
    {},
    {"window": 1},
    {"window": 2},
    {"window": 7},
    {"window": 500},  # larger than every sequence
    {"dilation": 1},
    {"dilation": 2},
    {"dilation": 5},
    {"dilation": 500},  # larger than every sequence: only the diagonal
    {"window": 3, "dilation": 4},
    {"window": 2, "dilation": 3, "num_global": 2},
    {"dilation": 7, "num_global": 3},
    {"window": 4, "num_global": 1},
    {"num_global": 3},  # neither window nor dilation: dense
]


def _check(out, expected, dtype=torch.float32):
    assert_close(out, expected, dtype, "out")


@settings(max_examples=examples(40))
@given(case=op_cases(dtypes=(torch.float32,), max_heads=3, head_dims=(4, 8)))
def test_generated_cases_match_dense_oracle(case):
    inputs = case.inputs(requires_grad=False)
    pattern = dict(window=case.pattern.window, dilation=case.pattern.dilation, num_global=case.pattern.num_global)
    out = call(kernels.unified_attention, inputs, backend="reference", scale=case.scale, **pattern)
    _check(out, call(dense_attention, inputs, scale=case.scale, **pattern))


@settings(max_examples=examples(25))
@given(case=op_cases(dtypes=(torch.float32,), max_heads=2, head_dims=(4,)))
def test_banded_pieces_match_dense_oracle_generated(monkeypatch_banded, case):
    inputs = case.inputs(requires_grad=False)
    pattern = dict(window=case.pattern.window, dilation=case.pattern.dilation, num_global=case.pattern.num_global)
    out = call(kernels.unified_attention, inputs, backend="reference", scale=case.scale, **pattern)
    _check(out, call(dense_attention, inputs, scale=case.scale, **pattern))


@pytest.fixture
def monkeypatch_banded(monkeypatch):
    """Force the banded (sparse) pieces even where the dense path would be cheaper."""
    monkeypatch.setattr(ref, "banded_pays", lambda pattern, N: pattern.sparse)


@pytest.mark.parametrize("pattern", PATTERNS, ids=lambda p: ",".join(f"{k}={v}" for k, v in p.items()) or "dense")
def test_matches_dense_oracle(pattern):
    inputs = make_inputs(LENGTHS, TARGETS, heads=3, head_dim=8, value_dim=6)
    out = call(kernels.unified_attention, inputs, backend="reference", **pattern)
    _check(out, call(dense_attention, inputs, **pattern))


@pytest.mark.parametrize("pattern", [p for p in PATTERNS if p.get("window") or p.get("dilation")],
                         ids=lambda p: ",".join(f"{k}={v}" for k, v in p.items()))
def test_banded_pieces_match_dense_oracle(monkeypatch, pattern):
    """Force the banded (sparse) pieces even where the dense path would be cheaper."""
    monkeypatch.setattr(ref, "banded_pays", lambda pattern, N: pattern.sparse)
    inputs = make_inputs([40, 1, 33, 100, 2], [3, 0, 33, 1, 0], heads=2, head_dim=4)
    out = call(kernels.unified_attention, inputs, backend="reference", **pattern)
    _check(out, call(dense_attention, inputs, **pattern))


@pytest.mark.parametrize("case", ["one-token", "all-targets", "no-targets", "empty-sequences", "single-head",
                                  "no-bias", "no-timestamps", "float-timestamps", "scale", "few-positions"])
def test_edge_cases(case):
    kw = {}
    lengths, targets = [9, 4, 17], [1, 2, 3]
    extra = {}
    if case == "one-token":
        lengths, targets = [1, 1, 1], [0, 1, 0]
    elif case == "all-targets":
        lengths, targets = [5, 3], [5, 3]
    elif case == "no-targets":
        targets = None
    elif case == "empty-sequences":
        lengths, targets = [0, 6, 0, 0, 3, 0], [0, 2, 0, 0, 3, 0]
    elif case == "single-head":
        kw["heads"] = 1
    elif case == "float-timestamps":
        kw["ts_float"] = True
    elif case == "few-positions":
        kw["num_positions"] = 3  # clamping of relative positions
    inputs = make_inputs(lengths, targets, **kw)
    if case == "no-bias":
        inputs["w_pos"] = inputs["w_time"] = None
    if case == "no-timestamps":
        inputs["timestamps"] = None
    if case == "scale":
        extra["scale"] = 0.37
    out = call(kernels.unified_attention, inputs, **extra)
    _check(out, call(dense_attention, inputs, **extra))


def test_many_heads_and_dv_differs():
    inputs = make_inputs([20, 7], [2, 1], heads=16, head_dim=16, value_dim=32)
    out = call(kernels.unified_attention, inputs, window=3, dilation=2)
    _check(out, call(dense_attention, inputs, window=3, dilation=2))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs(dtype):
    inputs = make_inputs([13, 30], [1, 4], dtype=dtype)
    out = call(kernels.unified_attention, inputs)
    assert out.dtype == dtype
    _check(out, call(dense_attention, inputs), dtype)


def test_time_bucket_exact_near_powers_of_two():
    dt = torch.tensor([0, 1, 2, 3, 4, 7, 8, 2**24 - 1, 2**24, 2**24 + 1, 2**40 - 1, 2**40, 2**52 - 1])
    expected = [max(int(x), 1).bit_length() - 1 for x in dt]
    assert kernels.time_bucket(dt, 128).tolist() == expected
    assert kernels.time_bucket(dt, 5).tolist() == [min(e, 5) for e in expected]


@pytest.mark.parametrize("pattern", [{}, {"window": 2, "dilation": 2, "num_global": 1}, {"dilation": 3}])
def test_gradcheck_float64(pattern, monkeypatch):
    monkeypatch.setattr(ref, "banded_pays", lambda pattern, N: pattern.sparse)
    inputs = make_inputs([4, 1, 7], [1, 1, 2], heads=2, head_dim=3, value_dim=2, num_positions=4, num_buckets=6,
                         dtype=torch.float64, requires_grad=True)
    names = ("q", "k", "v", "w_pos", "w_time")
    fixed = {k: v for k, v in inputs.items() if k not in names}

    def fn(q, k, v, w_pos, w_time):
        return kernels.unified_attention(q, k, v, fixed["offsets"], fixed["timestamps"], fixed["num_targets"],
                                         w_pos, w_time, num_buckets=fixed["num_buckets"], **pattern)

    assert torch.autograd.gradcheck(fn, tuple(inputs[n] for n in names))


def test_gradients_match_dense_oracle():
    inputs = make_inputs([6, 11, 2], [2, 0, 2], dtype=torch.float64, requires_grad=True)
    names = ("q", "k", "v", "w_pos", "w_time")
    g = torch.randn(sum([6, 11, 2]), 2, 8, dtype=torch.float64)
    grads = torch.autograd.grad((call(kernels.unified_attention, inputs) * g).sum(), [inputs[n] for n in names])
    expected = torch.autograd.grad((call(dense_attention, inputs) * g).sum(), [inputs[n] for n in names])
    for name, a, b in zip(names, grads, expected):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-8, msg=name)


def test_k_candidates_in_one_pass_equal_k_single_passes():
    """Target isolation: one sequence with K targets == K sequences with one target each."""
    n, K = 23, 9
    inputs = make_inputs([n + K], [K], heads=2, head_dim=8)
    out = call(kernels.unified_attention, inputs, window=5, dilation=3)
    q, k, v, ts = inputs["q"], inputs["k"], inputs["v"], inputs["timestamps"]
    rows = [torch.cat([torch.arange(n), torch.tensor([n + t])]) for t in range(K)]
    sep = {name: torch.cat([x[r] for r in rows]) for name, x in (("q", q), ("k", k), ("v", v), ("timestamps", ts))}
    offsets = torch.arange(0, K * (n + 1) + 1, n + 1)
    out_sep = kernels.unified_attention(sep["q"], sep["k"], sep["v"], offsets, sep["timestamps"],
                                        torch.ones(K, dtype=torch.int64), inputs["w_pos"], inputs["w_time"],
                                        num_buckets=inputs["num_buckets"], window=5, dilation=3)
    for t in range(K):
        seg = out_sep[t * (n + 1): (t + 1) * (n + 1)]
        assert (seg[n] - out[n + t]).abs().max() < 1e-5
        assert (seg[:n] - out[:n]).abs().max() < 1e-5


def test_memory_grows_with_sum_of_squares_not_T_squared():
    """2000 sequences of 100 tokens: T = 200k; a [T, T] float matrix would need 160 GB."""
    lengths = [100] * 2000
    inputs = make_inputs(lengths, [1] * 2000, heads=1, head_dim=4)
    out = call(kernels.unified_attention, inputs)
    assert out.shape == (200_000, 1, 4) and torch.isfinite(out).all()


def test_banded_plan_size_grows_with_allowed_pairs():
    """With a sparse pattern, the reference's score tensors hold O(L (W + L/r)) entries, not L^2."""
    L, W, r = 2048, 32, 64
    pattern = AttentionPattern(W, r, 2)
    n = torch.tensor([L])
    starts = torch.tensor([0])
    plan = ref._plan_group(starts, n, torch.tensor([0]), L, 0, None, ref._Bias(None, None, 0), pattern,
                           torch.float32)
    kinds = [p.kind for p in plan.pieces]
    assert kinds == ["band", "classes", "global"]
    entries = sum(p.bias.numel() for p in plan.pieces)
    assert entries <= 2 * L * (2 * W + L // r + 2)
    assert entries < L * L / 8


BAD = [
    ("q", lambda a: a.update(q=a["q"][:, :, None])),
    ("k", lambda a: a.update(k=a["k"][:-1])),
    ("k", lambda a: a.update(k=a["k"].double())),
    ("v", lambda a: a.update(v=a["v"][:, :1])),
    ("q", lambda a: a.update(q=a["q"].long(), k=a["k"].long(), v=a["v"].long())),
    ("offsets", lambda a: a.update(offsets=a["offsets"].float())),
    ("offsets", lambda a: a.update(offsets=torch.tensor([0, 10, 5, 22]))),
    ("offsets", lambda a: a.update(offsets=torch.tensor([0, 5, 10, 21]))),
    ("offsets", lambda a: a.update(offsets=torch.tensor([1, 5, 10, 22]))),
    ("offsets", lambda a: a.update(offsets=a["offsets"][None])),
    ("num_targets", lambda a: a.update(num_targets=torch.tensor([6, 0, 0]))),
    ("num_targets", lambda a: a.update(num_targets=torch.tensor([1, -1, 0]))),
    ("num_targets", lambda a: a.update(num_targets=torch.tensor([1, 1]))),
    ("timestamps", lambda a: a.update(timestamps=a["timestamps"][:-1])),
    ("w_pos", lambda a: a.update(w_pos=torch.randn(4))),
    ("w_time", lambda a: a.update(w_time=torch.randn(5))),
]


@pytest.mark.parametrize("name,mutate", BAD, ids=[f"{n}-{i}" for i, (n, _) in enumerate(BAD)])
def test_bad_input_raises_value_error_naming_argument(name, mutate):
    inputs = make_inputs([5, 5, 12], [1, 0, 2])
    mutate(inputs)
    with pytest.raises(ValueError, match=name):
        call(kernels.unified_attention, inputs)


@pytest.mark.parametrize("kw,name", [({"window": 0}, "window"), ({"dilation": 0}, "dilation"),
                                     ({"window": -3}, "window"), ({"num_global": -1}, "num_global"),
                                     ({"backend": "cuda"}, "backend"), ({"num_buckets": -1}, "num_buckets")])
def test_bad_pattern_raises(kw, name):
    inputs = make_inputs([5, 5], [1, 0])
    with pytest.raises(ValueError, match=name):
        call(kernels.unified_attention, inputs, **kw)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA to mix devices")
def test_device_mismatch_raises():
    inputs = make_inputs([5, 5], [1, 0])
    inputs["q"] = inputs["q"].cuda()
    with pytest.raises(ValueError, match="device"):
        call(kernels.unified_attention, inputs)


def test_device_mismatch_raises_meta():
    """Devices that disagree (meta stands in for a second device on CPU-only machines)."""
    inputs = make_inputs([5, 5], [1, 0])
    inputs["w_pos"] = inputs["w_pos"].to("meta")
    with pytest.raises(ValueError, match="w_pos"):
        call(kernels.unified_attention, inputs)


def test_reuse_bias_scope_shares_plans_and_keeps_gradients():
    inputs = make_inputs([12, 30], [2, 1], requires_grad=True)
    with kernels.reuse_bias():
        a = call(kernels.unified_attention, inputs)
        b = call(kernels.unified_attention, inputs)
    torch.testing.assert_close(a, b)
    (a.sum() + b.sum()).backward()
    g_shared = inputs["w_pos"].grad.clone()
    inputs["w_pos"].grad = None
    (call(kernels.unified_attention, inputs).sum() * 2).backward()
    torch.testing.assert_close(g_shared, inputs["w_pos"].grad)
