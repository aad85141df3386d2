"""Parity of the Triton kernels (backend="triton") with the reference: outputs and all five
gradients on generated cases (hypothesis: lengths incl. 0 and 1, targets, patterns, heads, head
dims, dtypes, bias terms) plus explicit edge cases. On CPU the kernels run under the Triton
interpreter; with CUDA present the same tests also run compiled."""
import pytest
import torch
from hypothesis import example, given, settings

import suan_kernels as sk
from suan_kernels.ops.unified_attention import AttentionPattern
from support.closeness import assert_close_or_as_pytorch
from support.jagged import DEVICES, GRAD_NAMES, as_call, call, detached_copy, make_inputs
from support.strategies import OpCase, examples, op_cases

F32, F16, BF16 = torch.float32, torch.float16, torch.bfloat16


def _reference(inputs, pattern, compute_dtype=None, **kw):
    """The reference op on a fresh copy of ``inputs``: (copy, out, lse [T, H]). Without a
    ``compute_dtype`` the copy's half-precision tensors are float32 (the same values): the op
    returns its input dtype, and an expected output rounded to half precision would carry a
    rounding of the size of what the bias-table gradients are checked for (c_i below)."""
    from suan_kernels.ops.unified_attention.reference import unified_attention_reference
    from suan_kernels.ops.unified_attention.validation import check_values

    copy = detached_copy(inputs)
    if compute_dtype is None:
        copy = {k: (v.detach().float().requires_grad_(v.requires_grad)
                    if isinstance(v, torch.Tensor) and v.dtype in (torch.float16, torch.bfloat16) else v)
                for k, v in copy.items()}
    c = as_call(copy, pattern, scale=kw.get("scale"))
    if c.q.shape[0] == 0:  # no tokens: the op's own empty output
        out = call(sk.unified_attention, copy, backend="reference", window=pattern.window,
                   dilation=pattern.dilation, num_global=pattern.num_global, **kw)
        return copy, out, out.new_zeros((0, out.shape[1]), dtype=torch.float32)
    out, lse = unified_attention_reference(c, *check_values(c), compute_dtype=compute_dtype, return_lse=True)
    return copy, out, lse


def run_parity(inputs, dtype, pattern=AttentionPattern(), grads=True, seed=0, **kw):
    """Triton against the reference on ``inputs``: the output, then every gradient.

    The kernels, like FlashAttention, take Delta_i = dO_i . O_i from their stored output (in the
    input dtype); their gradients are then exactly those of ``sum(dO * O) + sum(c * LSE)`` with
    c_i = dO_i . (O_i - O~_i), which the expected gradients include (zero in exact arithmetic,
    an input-dtype rounding otherwise: it matters where the exact result cancels, as in the
    bias-table gradients). A third run, the reference computed in the inputs' dtype (the expected
    values are computed in float32 for half precisions, float64 for float32), gives the fallback
    criterion of ``assert_close_or_as_pytorch``."""
    pat = dict(window=pattern.window, dilation=pattern.dilation, num_global=pattern.num_global)
    out = call(sk.unified_attention, inputs, backend="triton", **pat, **kw)
    half = dtype in (torch.float16, torch.bfloat16)
    fp32 = dtype == torch.float32
    # float32: the expected values in float64 arithmetic, PyTorch's own float32 error the fallback
    # criterion (sharp softmaxes, e.g. scale 1 at dh 32, cancel in dq below any elementwise rtol)
    ref_inputs, ref, ref_lse = _reference(inputs, pattern, torch.float64 if fp32 else None, **kw)
    lp_inputs, lp, _ = _reference(inputs, pattern, dtype if half else None, **kw) if (half or fp32) else (
        ref_inputs, ref, None)
    assert out.dtype == inputs["q"].dtype
    assert_close_or_as_pytorch(out, ref, lp, dtype, "out")
    if not grads:
        return
    g = torch.randn(ref.shape, generator=torch.Generator().manual_seed(seed)).to(dtype)
    names = [n for n in GRAD_NAMES if inputs.get(n) is not None and inputs[n].requires_grad]
    c = (g.float() * (ref.detach().float() - out.detach().float())).sum(-1)  # [T, H]

    def grads_of(loss, src):
        return torch.autograd.grad(loss, [src[n] for n in names], allow_unused=True)

    got = grads_of((out.float() * g.float()).sum(), inputs)
    exp = grads_of((ref.float() * g.float()).sum() + (c * ref_lse.float()).sum(), ref_inputs)
    low = grads_of((lp.float() * g.float()).sum(), lp_inputs) if (half or fp32) else exp
    for name, a, b, lo in zip(names, got, exp, low):
        if b is None:  # the reference's output does not depend on it: zero (up to rounding) or None
            if a is not None:
                zero = torch.zeros_like(a)
                assert_close_or_as_pytorch(a, zero, zero if lo is None else lo, dtype, f"d{name}")
            continue
        assert a is not None, f"d{name} missing"
        assert_close_or_as_pytorch(a, b, b if lo is None else lo, dtype, f"d{name}")


def _case(lengths, targets, **kw) -> OpCase:
    return OpCase(tuple(lengths), tuple(targets), **kw)


SPARSE = AttentionPattern
EDGE_CASES = [
    _case([1], [0], heads=1),  # a single token
    _case([1, 1, 1], [1, 0, 1]),  # length-1 sequences, target-only rows
    _case([17, 0, 33, 5], [0, 0, 3, 5], head_dim=32, value_dim=16),  # ragged blocks, empty, all targets
    _case([40, 9], [7, 2], heads=4, value_dim=32, dtype=F16),  # dv > dh
    _case([31, 16, 2], [1, 16, 0], heads=3, head_dim=64, value_dim=64, dtype=BF16),
    _case([21, 6], [2, 1], heads=1, head_dim=128, value_dim=128),
    _case([21, 6], [2, 1], heads=1, head_dim=8, value_dim=24),
    _case([19, 3, 1], [2, 0, 1], heads=16, value_dim=32, pattern=SPARSE(5, 3)),  # many heads
    _case([50, 3, 0, 37, 1], [4, 3, 0, 0, 0], pattern=SPARSE(window=1)),
    _case([50, 3, 0, 37, 1], [4, 3, 0, 0, 0], pattern=SPARSE(dilation=1000)),
    _case([50, 3, 0, 37, 1], [4, 3, 0, 0, 0], pattern=SPARSE(5, 6, 17)),
    _case([45, 20], [2, 5], head_dim=32, dtype=BF16, pattern=SPARSE(4, 5, 2)),
    _case([19, 24], [3, 1], with_pos=False, with_time=False),  # no bias
    _case([19, 24], [3, 1], with_timestamps=False),
    _case([19, 24], [3, 1], ts_float=True, num_positions=1, scale=0.21),
]


@pytest.mark.parametrize("device", DEVICES)
@settings(max_examples=examples(40))
@given(case=op_cases())
@example(case=EDGE_CASES[0])
@example(case=EDGE_CASES[1])
@example(case=EDGE_CASES[2])
@example(case=EDGE_CASES[3])
@example(case=EDGE_CASES[4])
@example(case=EDGE_CASES[5])
@example(case=EDGE_CASES[6])
@example(case=EDGE_CASES[7])
@example(case=EDGE_CASES[8])
@example(case=EDGE_CASES[9])
@example(case=EDGE_CASES[10])
@example(case=EDGE_CASES[11])
@example(case=EDGE_CASES[12])
@example(case=EDGE_CASES[13])
@example(case=EDGE_CASES[14])
def test_triton_matches_reference(device, case):
    run_parity(case.inputs(device), case.dtype, case.pattern, seed=case.seed, scale=case.scale)


@pytest.mark.parametrize("device", DEVICES)
def test_k_candidates_one_pass_equal_single_passes(device):
    n, K = 37, 6
    inputs = make_inputs([n + K], [K], device=device)
    out = call(sk.unified_attention, inputs, backend="triton", window=5, dilation=3)
    for t in range(K):
        rows = torch.cat([torch.arange(n), torch.tensor([n + t])]).to(device)
        single = sk.unified_attention(
            inputs["q"][rows], inputs["k"][rows], inputs["v"][rows], torch.tensor([0, n + 1], device=device),
            inputs["timestamps"][rows], torch.tensor([1], device=device), inputs["w_pos"], inputs["w_time"],
            num_buckets=inputs["num_buckets"], window=5, dilation=3, backend="triton")
        assert (single[n] - out[n + t]).abs().max() < 1e-5
        assert (single[:n] - out[:n]).abs().max() < 1e-5


@pytest.mark.parametrize("device", DEVICES)
def test_bias_gradients_are_deterministic(device):
    inputs = make_inputs([60, 33], [3, 2], device=device, requires_grad=True)
    results = []
    for _ in range(2):
        out = call(sk.unified_attention, inputs, backend="triton", window=6, dilation=4)
        results.append(torch.autograd.grad(out.sum(), [inputs["w_pos"], inputs["w_time"]]))
    for a, b in zip(*results):
        assert torch.equal(a, b)


@pytest.mark.parametrize("device", DEVICES)
def test_float_atomics_mode_matches(device):
    inputs = make_inputs([30, 12], [2, 2], device=device, requires_grad=True)
    sk.set_bias_grad_mode("float")
    try:
        run_parity(inputs, torch.float32, AttentionPattern(window=4))
    finally:
        sk.set_bias_grad_mode("fixed")
    with pytest.raises(ValueError, match="mode"):
        sk.set_bias_grad_mode("fast")


@pytest.mark.parametrize("device", DEVICES)
def test_many_sequences_per_call(device):
    lengths = [int(x) for x in torch.randint(0, 12, (150,))]
    targets = [min(1, x) for x in lengths]
    inputs = make_inputs(lengths, targets, heads=1, head_dim=16, device=device, requires_grad=True)
    run_parity(inputs, torch.float32)


def test_invalid_offsets_raise_on_triton_backend():
    inputs = make_inputs([5, 5], [1, 0])
    inputs["offsets"] = torch.tensor([0, 6, 4])
    with pytest.raises(ValueError, match="offsets"):
        call(sk.unified_attention, inputs, backend="triton")
    inputs = make_inputs([5, 5], [1, 0])
    inputs["num_targets"] = torch.tensor([6, 0])
    with pytest.raises(ValueError, match="num_targets"):
        call(sk.unified_attention, inputs, backend="triton")


def test_auto_backend_on_cpu_runs_reference(monkeypatch):
    from suan_kernels.ops.unified_attention import function

    called = []
    monkeypatch.setattr(function, "unified_attention_triton", lambda *a, **k: called.append(1))
    inputs = make_inputs([5, 5], [1, 0])
    call(sk.unified_attention, inputs)
    assert not called
    call(sk.unified_attention, inputs, backend="triton")
    assert called


def test_custom_ops_fake_and_real_agree():
    """torch.library.opcheck: schema, fake (meta) vs real outputs; the fakes describe the real outputs."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from support.jagged import as_call

    inputs = make_inputs([9, 4], [1, 2], heads=2, head_dim=16, requires_grad=True)
    tensors, nb, pattern, scale = as_call(inputs, AttentionPattern(3, 2, 1), scale=0.25).flat()
    args = [tensors, nb, pattern, scale]
    torch.library.opcheck(torch.ops.suan.unified_attention_fwd.default, args,
                          test_utils=("test_schema", "test_faketensor"))
    out, lse = torch.ops.suan.unified_attention_fwd(*args)
    do = torch.randn_like(out)
    bwd_args = [do, out, lse, tensors, nb, pattern, scale, [True] * 5]
    torch.library.opcheck(torch.ops.suan.unified_attention_bwd.default, bwd_args,
                          test_utils=("test_schema", "test_faketensor"))
    grads = torch.ops.suan.unified_attention_bwd(*bwd_args)
    with FakeTensorMode(allow_non_fake_inputs=True):
        fake_out, fake_lse = torch.ops.suan.unified_attention_fwd(*args)
        fake_grads = torch.ops.suan.unified_attention_bwd(*bwd_args)
    assert (fake_out.shape, fake_out.dtype, fake_lse.shape, fake_lse.dtype) == (out.shape, out.dtype, lse.shape,
                                                                                 lse.dtype)
    assert [(g.shape, g.dtype) for g in fake_grads] == [(g.shape, g.dtype) for g in grads]


def test_compiles_without_graph_breaks():
    """A layer using the fused op compiles with fullgraph=True (the custom ops are opaque)."""
    torch._dynamo.reset()
    layer = sk.FusedUnifiedAttention(32, 2, num_positions=16, num_buckets=16)
    inputs = make_inputs([11, 6], [2, 1], heads=2, head_dim=16)
    x = torch.randn(17, 32, requires_grad=True)

    def fn(x):
        return layer(x, inputs["offsets"], inputs["timestamps"], inputs["num_targets"])

    compiled = torch.compile(fn, backend="aot_eager", fullgraph=True)
    out = compiled(x)
    ref = fn(x)
    torch.testing.assert_close(out, ref)
    g1 = torch.autograd.grad(out.sum(), x)[0]
    g2 = torch.autograd.grad(fn(x).sum(), x)[0]
    torch.testing.assert_close(g1, g2)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("ts_float", [False, True])
def test_separate_bias_tables_when_the_joint_table_is_too_large(device, ts_float, monkeypatch):
    """Both bias terms normally come from one joint table w_pos[r] + w_time[b]; past
    ``JOINT_TABLE_MAX_ENTRIES`` the kernels read the two tables (and accumulate their gradients
    separately, w_time per bucket present): the same answers, dense and sparse."""
    from suan_kernels.ops.unified_attention import launch

    inputs = make_inputs([45, 20, 1], [2, 5, 1], heads=2, device=device, requires_grad=True, ts_float=ts_float)
    assert launch._Run(as_call(inputs, AttentionPattern())).jrow > 0  # the default: the joint table
    monkeypatch.setattr(launch, "JOINT_TABLE_MAX_ENTRIES", 0)
    assert launch._Run(as_call(inputs, AttentionPattern())).jrow == 0
    run_parity(inputs, torch.float32)
    run_parity(inputs, torch.float32, AttentionPattern(window=6, dilation=4, num_global=2))


def test_float32_and_sparse_launches_autotune_over_the_8_warp_configs_only():
    """The 4-warp configs spill for float32 tiles and the sparse pattern's masks
    (bench/compile_check.py): the autotuner's early prune keeps them for 16-bit dense launches."""
    import triton

    from suan_kernels.ops.unified_attention.triton_kernels import _prune_configs

    configs = [triton.Config({}, num_warps=w) for w in (4, 8, 4)]
    cases = [(torch.float32, {}, [8]), (torch.bfloat16, {}, [4, 8, 4]), (torch.float16, {"SPARSE": False}, [4, 8, 4]),
             (torch.bfloat16, {"SPARSE": True}, [8]), (torch.float16, {"PASS_B": True}, [8])]
    for dtype, flags, warps in cases:
        kept = _prune_configs(configs, {"Q": torch.empty(2, 2, 2, dtype=dtype)}, **flags)
        assert [c.num_warps for c in kept] == warps, (dtype, flags)
    only_4 = [triton.Config({}, num_warps=4)]
    assert _prune_configs(only_4, {"Q": torch.empty(1)}) == only_4  # never empty
    groups = [triton.Config({"GROUP_COLS": c}, num_warps=w) for w, c in ((4, 128), (8, 128), (8, 64))]
    kept = _prune_configs(groups, {"Q": torch.empty(1, dtype=torch.bfloat16)}, PASS_B=True)
    assert [(c.num_warps, c.kwargs["GROUP_COLS"]) for c in kept] == [(8, 64)]  # the dilated pass: one head


def test_autotuning_leaves_no_trace(monkeypatch):
    """On a GPU the autotuner runs every launch many times per config on the first call of a key
    (even one config: it still times it); kernels that read what an earlier launch left (pass B
    resumes pass A's softmax state and adds to its gradients, the bias-table gradients are
    accumulated with atomics) must be restored between those runs. Under the interpreter one
    config means no timing, so here the autotuners get two configs and a stand-in timer that runs
    each candidate three times: the result must still equal the reference."""
    import triton

    from suan_kernels.ops.unified_attention import launch

    mod = launch.fresh_kernel_module(True)
    timed = []

    def fake_do_bench(kernel_call, quantiles=None, **kw):
        for _ in range(3):
            kernel_call()
        timed.append(1)
        return [1.0, 1.0, 1.0] if quantiles else 1.0

    for name in ("attn_fwd", "attn_bwd_dq", "attn_bwd_dkdv"):
        tuner = getattr(mod, name)
        assert isinstance(tuner, triton.runtime.autotuner.Autotuner), name
        monkeypatch.setattr(tuner, "configs", list(tuner.configs) * 2)
        tuner.__dict__["do_bench"] = fake_do_bench  # a cached_property: the instance's value wins
        tuner._do_bench = fake_do_bench
    monkeypatch.setitem(launch._MODULES, True, mod)
    inputs = make_inputs([37, 20], [3, 2], heads=2, head_dim=16, requires_grad=True)
    for pattern in (AttentionPattern(window=6, dilation=4, num_global=2), AttentionPattern()):
        run_parity(inputs, torch.float32, pattern)
    assert len(timed) >= 2 * 3 * 2  # every kernel of both passes (two configs each) was timed


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("joint", [True, False])
def test_time_buckets_at_their_edges(device, joint, monkeypatch):
    """The kernels' int32 bucket (abs + bfind compiled, a float-exponent twin interpreted) gives
    -1 for dt = 0, read through the tables' leading copy of bucket 0: timestamps out of order
    (negative dt), tied (dt = 0) and at 2**k - 1 / 2**k / 2**k + 1 of each other, up to 2**30,
    with a distinct w_time per bucket: a bucket off by one changes the output and dw_time."""
    from suan_kernels.ops.unified_attention import launch

    if not joint:
        monkeypatch.setattr(launch, "JOINT_TABLE_MAX_ENTRIES", 0)
    stamps = [0, 0, 1, 2, 3, 4, 7, 8, 9, 255, 256, 257, 2**16 - 1, 2**16, 2**24, 2**24 + 1, 2**30 - 1, 2**30, 5, 5]
    order = torch.randperm(len(stamps), generator=torch.Generator().manual_seed(3))
    inputs = make_inputs([len(stamps), 7], [2, 1], heads=2, num_buckets=31, device=device, requires_grad=True,
                         seed=4)
    ts = inputs["timestamps"].clone()
    ts[:len(stamps)] = 1_700_000_000 + torch.tensor(stamps, dtype=torch.int64)[order]
    inputs["timestamps"] = ts.to(device)
    with torch.no_grad():
        inputs["w_time"].copy_(torch.linspace(-2.0, 2.0, 32))
    assert (launch._Run(as_call(inputs, AttentionPattern())).jrow > 0) == joint
    run_parity(inputs, torch.float32)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("in_order", [True, False])
def test_full_tiles_with_behaviors_in_and_out_of_time_order(device, in_order):
    """With every sequence's behaviors in time order (``TS_SORTED``, read in the timestamp check's
    one sync) the full tiles, whose keys all precede their queries, bucket dt >= 0 without
    ``abs``; out of order they keep it. Both give the reference's results, here with time
    differences at the bucket edges (ties, 2**k - 1 / 2**k / 2**k + 1) inside full tiles: a
    48-token sequence of behaviors only (the interpreter's 16-token blocks: three full tiles)."""
    from suan_kernels.ops.unified_attention import launch

    g = torch.Generator().manual_seed(11)
    edges = [0, 0, 1, 2, 3, 4, 7, 8, 9, 255, 256, 257, 2**16 - 1, 2**16, 2**16 + 1, 2**24, 2**24 + 1, 2**30 - 1]
    stamps = sorted(edges + torch.randint(0, 2**30, (48 - len(edges),), generator=g).tolist())
    if not in_order:
        stamps = [stamps[i] for i in torch.randperm(48, generator=g).tolist()]
    inputs = make_inputs([48, 21], [0, 3], heads=2, num_buckets=31, device=device, requires_grad=True, seed=5)
    ts = inputs["timestamps"].clone()
    ts[:48] = 1_700_000_000 + torch.tensor(stamps, dtype=torch.int64).to(ts.device)
    inputs["timestamps"] = ts
    with torch.no_grad():
        inputs["w_time"].copy_(torch.linspace(-2.0, 2.0, 32))
    assert launch._Run(as_call(inputs, AttentionPattern())).ts_sorted == in_order
    run_parity(inputs, torch.float32)
    run_parity(inputs, torch.float32, AttentionPattern(window=20, dilation=2, num_global=1))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("scale, in_dot", [(None, True), (0.3, True), (2.0 ** -16, True), (2.0 ** -17, False),
                                           (0.0, False), (-0.4, False)])
def test_forward_bias_in_the_matmul_or_after_scaling(device, scale, in_dot):
    """The forward's full tiles take the bias as the scores' matmul accumulator, from tables
    divided by the scale, and apply the scale in the exponent (one multiply-add a score) for
    scales from 2**-16 up; smaller, zero and negative scales (the row maximum would be taken
    before a sign flip, or the tables overflow) add the base-2 bias after scaling, as the masked
    tiles always do. Both give the reference's output and gradients, with and without the joint
    table and in the dilated pass (whose full tiles use the same path); 40 behaviors: the
    interpreter's 16-token blocks hold full tiles."""
    from suan_kernels.ops.unified_attention import launch

    inputs = make_inputs([40, 23], [2, 3], heads=3, num_positions=48, num_buckets=12, device=device,
                         requires_grad=True, seed=7)
    run = launch._Run(as_call(inputs, AttentionPattern(), scale=scale))
    assert run.bias_in_dot == in_dot and run.jrow > 0
    run_parity(inputs, torch.float32, scale=scale)
    half = make_inputs([40, 23], [2, 3], heads=3, num_buckets=12, dtype=torch.bfloat16, device=device,
                       requires_grad=True, seed=8)
    run_parity(half, torch.bfloat16, scale=scale)
    no_time = dict(inputs, timestamps=None)  # w_pos alone (no joint table)
    run_parity(no_time, torch.float32, AttentionPattern(window=12, dilation=3, num_global=1), scale=scale)


@pytest.mark.parametrize("device", DEVICES)
def test_packed_qkv_views_and_size_one_strides(device):
    """The kernels take the strides of the tiles their key loops load as constexpr: q, k, v as
    views of one packed [T, 3, H, d] projection (token stride 3 H d, not copied) give the
    reference's output and gradients through full tiles, and a size-1 head dimension's arbitrary
    stride is passed as its contiguous value (no compile of its own)."""
    from suan_kernels.ops.unified_attention.launch import _row_head_strides

    inputs = make_inputs([41, 20], [3, 2], heads=2, head_dim=16, device=device, requires_grad=True, seed=9)
    T, H, d = inputs["q"].shape
    packed = torch.stack([inputs[n].detach() for n in ("q", "k", "v")], dim=1).requires_grad_(True)  # [T, 3, H, d]
    views = dict(inputs, q=packed[:, 0], k=packed[:, 1], v=packed[:, 2])
    assert views["k"].stride() == (3 * H * d, d, 1)
    run_parity(views, torch.float32)
    assert _row_head_strides(views["k"]) == (3 * H * d, d)
    single = make_inputs([41, 20], [3, 2], heads=1, head_dim=16, device=device, requires_grad=True, seed=10)
    for n in ("q", "k", "v"):
        single[n] = single[n].detach().as_strided((T, 1, d), (d, 12345, 1)).requires_grad_(True)
    assert _row_head_strides(single["k"]) == (d, d)
    assert _row_head_strides(single["k"][:1]) == (d, d)  # one token: its token stride is not used either
    run_parity(single, torch.float32)


def test_time_order_check_compares_behaviors_only():
    """``check_timestamps`` says whether each sequence's behaviors are in time order: a target
    earlier than the behaviors does not count, a behavior earlier than the one before does, and
    float timestamps (their own kernel path) or a missing time term give False."""
    from suan_kernels.ops.unified_attention.validation import check_timestamps, check_values

    def verdict(inputs):
        c = as_call(inputs, AttentionPattern())
        return check_timestamps(c, check_values(c)[0])

    inputs = make_inputs([10, 6, 0, 1], [2, 0, 0, 1], seed=2)
    assert verdict(inputs) is True
    ts = inputs["timestamps"].clone()
    ts[9] = ts[0] - 5  # the first sequence's last target, before all its behaviors
    inputs["timestamps"] = ts
    assert verdict(inputs) is True
    ts[3] = ts[2] - 1  # a behavior before the one it follows
    assert verdict(inputs) is False
    ts[3] = ts[2]  # ties are in order
    ts[10] = ts[9] - 100  # the second sequence starts earlier than the first ends: not compared
    assert verdict(inputs) is True
    assert verdict(make_inputs([10, 6], [2, 0], seed=2, ts_float=True)) is False
    no_time = make_inputs([10, 6], [2, 0], seed=2)
    no_time["w_time"] = None
    assert verdict(no_time) is False
