"""Parity of the Triton kernels (backend="triton") with the reference: outputs and all five
gradients, every dtype, jagged edge cases, sparse patterns. On CPU the kernels run under the
Triton interpreter; with CUDA present the same tests also run compiled."""
import pytest
import torch

import kernels
from conftest import DEVICES
from jagged import TENSOR_ARGS, call, make_inputs

GRAD_NAMES = ("q", "k", "v", "w_pos", "w_time")
TOL = {torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 1e-2}


def _rel_err(a, b):
    """||a - b|| / ||b||, with an absolute floor of 1e-3 per element for (near) zero references."""
    a, b = a.double(), b.double()
    floor = 1e-3 * b.numel() ** 0.5
    return ((a - b).norm() / max(b.norm().item(), floor)).item()


def assert_close(out, ref, dtype, what):
    assert out.shape == ref.shape, what
    assert torch.isfinite(out).all(), f"{what}: non-finite values (unwritten output?)"
    tol = TOL[dtype]
    if dtype == torch.float32:
        torch.testing.assert_close(out.double(), ref.double(), atol=2e-5, rtol=tol, msg=what)
    else:
        assert _rel_err(out, ref) < tol, f"{what}: relative error {_rel_err(out, ref):.2e}"
        scale = ref.double().abs().max().item()
        assert (out.double() - ref.double()).abs().max().item() <= 4 * tol * max(scale, 1.0), what


def run_parity(inputs, dtype, pattern=None, grads=True, **kw):
    pattern = pattern or {}
    out = call(kernels.unified_attention, inputs, backend="triton", **pattern, **kw)
    ref_inputs = {k: (v.detach().clone().requires_grad_(v.requires_grad) if isinstance(v, torch.Tensor) else v)
                  for k, v in inputs.items()}
    ref = call(kernels.unified_attention, ref_inputs, backend="reference", **pattern, **kw)
    assert out.dtype == inputs["q"].dtype
    assert_close(out, ref, dtype, "out")
    if not grads:
        return
    g = torch.randn_like(ref, dtype=torch.float32).to(dtype)
    names = [n for n in GRAD_NAMES if inputs.get(n) is not None and inputs[n].requires_grad]
    got = torch.autograd.grad((out.float() * g.float()).sum(), [inputs[n] for n in names], allow_unused=True)
    exp = torch.autograd.grad((ref.float() * g.float()).sum(), [ref_inputs[n] for n in names], allow_unused=True)
    for name, a, b in zip(names, got, exp):
        if b is None:
            assert a is None or not a.abs().any(), name
            continue
        assert a is not None, f"d{name} missing"
        assert_close(a, b, dtype if name in ("q", "k", "v") else torch.float32 if dtype == torch.float32 else dtype,
                     f"d{name}")


DTYPES = [torch.float32, torch.float16, torch.bfloat16]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", [
    # (lengths, targets, heads, head_dim, value_dim)
    ([1], [0], 1, 16, 16),  # a single token
    ([1, 1, 1], [1, 0, 1], 2, 16, 16),  # length-1 sequences, target-only rows
    ([17, 0, 33, 5], [0, 0, 3, 5], 2, 32, 16),  # not multiples of the block, empty sequence, all targets
    ([40, 9], [7, 2], 4, 16, 32),  # dv > dh, 4 heads
    ([31, 16, 2], [1, 16, 0], 3, 64, 64),
])
def test_dense_parity(device, dtype, case, poison_empty):
    lengths, targets, heads, dh, dv = case
    inputs = make_inputs(lengths, targets, heads=heads, head_dim=dh, value_dim=dv, dtype=dtype, device=device,
                         requires_grad=True)
    run_parity(inputs, dtype)


@pytest.mark.parametrize("device", DEVICES)
def test_sixteen_heads(device, poison_empty):
    inputs = make_inputs([19, 3, 1], [2, 0, 1], heads=16, head_dim=16, value_dim=32, device=device,
                         requires_grad=True)
    run_parity(inputs, torch.float32, {"window": 5, "dilation": 3})


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("head_dim,value_dim", [(16, 16), (32, 32), (64, 16), (128, 128), (8, 24)])
def test_head_dims(device, head_dim, value_dim, poison_empty):
    inputs = make_inputs([21, 6], [2, 1], heads=1, head_dim=head_dim, value_dim=value_dim, device=device,
                         requires_grad=True)
    run_parity(inputs, torch.float32)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("variant", ["no-bias", "no-timestamps", "pos-only", "time-only", "float-timestamps",
                                     "no-targets", "few-positions", "scale"])
def test_bias_variants(device, variant, poison_empty):
    kw = {}
    if variant == "float-timestamps":
        kw["ts_float"] = True
    if variant == "few-positions":
        kw["num_positions"] = 2
    inputs = make_inputs([19, 24], None if variant == "no-targets" else [3, 1], device=device, requires_grad=True,
                         **kw)
    extra = {}
    if variant == "no-bias":
        inputs["w_pos"] = inputs["w_time"] = None
    elif variant == "no-timestamps":
        inputs["timestamps"] = None
    elif variant == "pos-only":
        inputs["w_time"] = None
    elif variant == "time-only":
        inputs["w_pos"] = None
    elif variant == "scale":
        extra["scale"] = 0.21
    run_parity(inputs, torch.float32, **extra)


SPARSE_PATTERNS = [
    {"window": 1}, {"window": 2}, {"window": 7}, {"window": 1000},
    {"dilation": 1}, {"dilation": 2}, {"dilation": 5}, {"dilation": 1000},
    {"window": 3, "dilation": 2}, {"window": 7, "dilation": 5}, {"window": 20, "dilation": 3},
    {"window": 2, "num_global": 3}, {"dilation": 4, "num_global": 2}, {"window": 5, "dilation": 6, "num_global": 17},
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("pattern", SPARSE_PATTERNS, ids=lambda p: ",".join(f"{k}={v}" for k, v in p.items()))
def test_sparse_parity_fp32(device, pattern, poison_empty):
    inputs = make_inputs([50, 3, 0, 37, 1], [4, 3, 0, 0, 0], heads=2, head_dim=16, device=device,
                         requires_grad=True)
    run_parity(inputs, torch.float32, pattern)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("pattern", [{"window": 7}, {"dilation": 3}, {"window": 4, "dilation": 5, "num_global": 2}],
                         ids=lambda p: ",".join(f"{k}={v}" for k, v in p.items()))
def test_sparse_parity_half(device, dtype, pattern, poison_empty):
    inputs = make_inputs([45, 20], [2, 5], heads=2, head_dim=32, value_dim=16, dtype=dtype, device=device,
                         requires_grad=True)
    run_parity(inputs, dtype, pattern)


@pytest.mark.parametrize("device", DEVICES)
def test_k_candidates_one_pass_equal_single_passes(device):
    n, K = 37, 6
    inputs = make_inputs([n + K], [K], device=device)
    out = call(kernels.unified_attention, inputs, backend="triton", window=5, dilation=3)
    for t in range(K):
        rows = torch.cat([torch.arange(n), torch.tensor([n + t])]).to(device)
        single = kernels.unified_attention(
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
        out = call(kernels.unified_attention, inputs, backend="triton", window=6, dilation=4)
        results.append(torch.autograd.grad(out.sum(), [inputs["w_pos"], inputs["w_time"]]))
    for a, b in zip(*results):
        assert torch.equal(a, b)


@pytest.mark.parametrize("device", DEVICES)
def test_float_atomics_mode_matches(device):
    from kernels import triton_ops

    inputs = make_inputs([30, 12], [2, 2], device=device, requires_grad=True)
    triton_ops.set_bias_grad_mode("float")
    try:
        run_parity(inputs, torch.float32, {"window": 4})
    finally:
        triton_ops.set_bias_grad_mode("fixed")
    with pytest.raises(ValueError, match="mode"):
        triton_ops.set_bias_grad_mode("fast")


@pytest.mark.parametrize("device", DEVICES)
def test_many_sequences_per_call(device):
    lengths = [int(x) for x in torch.randint(0, 12, (300,))]
    targets = [min(1, x) for x in lengths]
    inputs = make_inputs(lengths, targets, heads=1, head_dim=16, device=device, requires_grad=True)
    run_parity(inputs, torch.float32)


def test_invalid_offsets_raise_on_triton_backend():
    inputs = make_inputs([5, 5], [1, 0])
    inputs["offsets"] = torch.tensor([0, 6, 4])
    with pytest.raises(ValueError, match="offsets"):
        call(kernels.unified_attention, inputs, backend="triton")
    inputs = make_inputs([5, 5], [1, 0])
    inputs["num_targets"] = torch.tensor([6, 0])
    with pytest.raises(ValueError, match="num_targets"):
        call(kernels.unified_attention, inputs, backend="triton")


def test_auto_backend_on_cpu_runs_reference(monkeypatch):
    from kernels import triton_ops

    called = []
    monkeypatch.setattr(triton_ops, "unified_attention_triton", lambda *a, **k: called.append(1))
    inputs = make_inputs([5, 5], [1, 0])
    call(kernels.unified_attention, inputs)
    assert not called
    call(kernels.unified_attention, inputs, backend="triton")
    assert called


def test_custom_ops_fake_and_real_agree():
    """torch.library.opcheck: schema, fake (meta) vs real outputs, autograd registration."""
    inputs = make_inputs([9, 4], [1, 2], heads=2, head_dim=16, requires_grad=True)
    args = [inputs[n] for n in TENSOR_ARGS] + [inputs["num_buckets"], 3, 2, 1, 0.25]
    torch.library.opcheck(torch.ops.suan.unified_attention_fwd.default, args,
                          test_utils=("test_schema", "test_faketensor"))
    out, lse = torch.ops.suan.unified_attention_fwd(*args)
    do = torch.randn_like(out)
    bwd_args = [do, inputs["q"], inputs["k"], inputs["v"], out, lse] + [inputs[n] for n in TENSOR_ARGS[3:]] + \
        [inputs["num_buckets"], 3, 2, 1, 0.25, True, True]
    torch.library.opcheck(torch.ops.suan.unified_attention_bwd.default, bwd_args,
                          test_utils=("test_schema", "test_faketensor"))
    # the fake implementations describe the real outputs
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode(allow_non_fake_inputs=True):
        fake_out, fake_lse = torch.ops.suan.unified_attention_fwd(*args)
    assert (fake_out.shape, fake_out.dtype, fake_lse.shape, fake_lse.dtype) == (out.shape, out.dtype, lse.shape,
                                                                                 lse.dtype)


def test_compiles_without_graph_breaks():
    """A layer using the fused op compiles with fullgraph=True (the custom ops are opaque)."""
    torch._dynamo.reset()
    layer = kernels.FusedUnifiedAttention(32, 2, num_positions=16, num_buckets=16)
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


def test_swap_helpers_keep_outputs_and_gradients():
    from suan import SUAN, config_for_grade, random_batch

    torch.manual_seed(0)
    cfg = config_for_grade("g0", max_len=20, dropout=0.0)
    model = SUAN(cfg).eval()
    batch = random_batch(cfg.schema, 3, 20, 2, seed=4)
    ref_out = model(batch)
    ref_grads = torch.autograd.grad(ref_out.sum(), list(model.parameters()))
    params_before = [id(p) for p in model.parameters()]
    assert kernels.swap_to_fused(model) == cfg.num_layers
    assert all(isinstance(b.attn, kernels.FusedUnifiedAttention) for b in model.blocks)
    assert [id(p) for p in model.parameters()] == params_before
    fused_out = model(batch)
    fused_grads = torch.autograd.grad(fused_out.sum(), list(model.parameters()))
    torch.testing.assert_close(fused_out, ref_out, atol=1e-5, rtol=1e-5)
    for a, b in zip(fused_grads, ref_grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    assert kernels.swap_to_reference(model) == cfg.num_layers
    assert all(isinstance(b.attn, kernels.ReferenceUnifiedAttention) for b in model.blocks)
    torch.testing.assert_close(model(batch), ref_out)
