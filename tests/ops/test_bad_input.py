"""Inputs that used to give a wrong answer or a crash: strided metadata and bias tables, zero
tokens with bias gradients, timestamps beyond the contract, float64 on the Triton path, and how
non-finite values propagate (documented in the op's docstring)."""
import pytest
import torch

import suan_kernels as sk
from suan_kernels.ops.unified_attention.naive import dense_attention
from support.closeness import assert_close
from support.jagged import call, make_inputs

BACKENDS = ["reference", "triton"]


def _strided(t, step=2, fill=99):
    """The same values as a non-contiguous view (every ``step``-th element of a longer buffer)."""
    buf = torch.full((t.numel() * step,) + tuple(t.shape[1:]), fill, dtype=t.dtype)
    buf[::step] = t
    view = buf[::step]
    assert not view.is_contiguous() or t.numel() <= 1
    return view.requires_grad_(t.requires_grad) if t.is_floating_point() else view


@pytest.mark.parametrize("backend", BACKENDS)
def test_strided_metadata_and_tables_are_honoured(backend):
    inputs = make_inputs([9, 0, 21, 5], [2, 0, 1, 5], seed=3)
    want = call(sk.unified_attention, inputs, backend=backend, window=4, dilation=3)
    strided = dict(inputs)
    for name in ("offsets", "num_targets", "w_pos", "w_time", "timestamps"):
        strided[name] = _strided(inputs[name])
    got = call(sk.unified_attention, strided, backend=backend, window=4, dilation=3)
    assert torch.equal(got, want)


@pytest.mark.parametrize("backend", BACKENDS)
def test_strided_q_k_v_and_table_gradients(backend):
    inputs = make_inputs([13, 7], [2, 1], heads=3, head_dim=16, requires_grad=True, seed=4)
    out = call(sk.unified_attention, inputs, backend=backend)
    g = torch.randn_like(out)
    names = ("q", "k", "v", "w_pos", "w_time")
    want = torch.autograd.grad((out * g).sum(), [inputs[n] for n in names])
    strided = dict(inputs)
    # q, k, v with the head dim not innermost, w_pos / w_time as step-2 views
    for n in ("q", "k", "v"):
        x = inputs[n].detach()
        strided[n] = x.permute(0, 2, 1).contiguous().permute(0, 2, 1).requires_grad_(True)
        assert strided[n].stride(-1) != 1
    for n in ("w_pos", "w_time"):
        strided[n] = _strided(inputs[n].detach()).requires_grad_(True)
    got_out = call(sk.unified_attention, strided, backend=backend)
    assert_close(got_out, out.detach(), torch.float32, "out")
    got = torch.autograd.grad((got_out * g).sum(), [strided[n] for n in names])
    for n, a, b in zip(names, got, want):
        assert a.shape == b.shape
        assert_close(a, b, torch.float32, f"d{n}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_zero_tokens_give_zero_gradients(backend):
    q = torch.randn(0, 2, 8, requires_grad=True)
    w_pos = torch.randn(7, requires_grad=True)
    w_time = torch.randn(5, requires_grad=True)
    out = sk.unified_attention(q, q, q, torch.tensor([0, 0, 0]), torch.zeros(0, dtype=torch.long), None, w_pos,
                               w_time, num_buckets=4, backend=backend)
    assert out.shape == (0, 2, 8)
    dq, dwp, dwt = torch.autograd.grad(out.sum(), [q, w_pos, w_time])
    assert dq.shape == (0, 2, 8) and not dwp.any() and not dwt.any()


@pytest.mark.parametrize("backend", BACKENDS)
def test_timestamp_span_at_the_limit_is_exact_and_beyond_is_refused(backend):
    inputs = make_inputs([6, 5], [1, 1], num_buckets=40, seed=5)
    ts = torch.tensor([0, 1, 2**20, 2**30, 2**31 - 2, 2**31 - 1] + [-(2**30), -5, 0, 7, 2**30 - 1])
    inputs["timestamps"] = ts
    out = call(sk.unified_attention, inputs, backend=backend)
    assert_close(out, call(dense_attention, inputs), torch.float32, "out")
    for bad in (torch.tensor([0] * 5 + [2**31] + [0] * 5), torch.tensor([-(2**63)] * 3 + [2**63 - 1] * 3 + [0] * 5)):
        inputs["timestamps"] = bad
        with pytest.raises(ValueError, match=r"^timestamps: sequence 0 spans"):
            call(sk.unified_attention, inputs, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_float_timestamps_are_refused(backend, value):
    inputs = make_inputs([6, 5], [1, 1], ts_float=True, seed=6)
    inputs["timestamps"][7] = value
    with pytest.raises(ValueError, match=r"^timestamps: non-finite values .* rows \[7\]"):
        call(sk.unified_attention, inputs, backend=backend)
    inputs["w_time"] = None  # no time term: the timestamps are not used, nor checked
    call(sk.unified_attention, inputs, backend=backend)


def test_float64_is_refused_on_triton_and_exact_on_auto():
    inputs = make_inputs([7, 4], [1, 2], dtype=torch.float64, seed=7)
    with pytest.raises(ValueError, match=r"^q: torch.float64 is not supported by the Triton kernels"):
        call(sk.unified_attention, inputs, backend="triton")
    out = call(sk.unified_attention, inputs)  # auto: the reference, in float64
    assert out.dtype == torch.float64
    assert_close(out, call(dense_attention, inputs), torch.float64, "out")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("where", ["q", "k", "v", "w_pos"])
def test_non_finite_values_never_cross_sequences(backend, where):
    """The documented propagation: never into another sequence; a non-finite q_i stays in row i,
    a bias-table entry in the rows that use it, and on the Triton path a k_j in the rows that
    attend to j (a v_j, or a k_j on the reference, may reach every row of its sequence: masked
    weights are exactly 0, and 0 x NaN is NaN inside the matmuls)."""
    inputs = make_inputs([20, 20, 20], [2, 0, 1], heads=1, head_dim=16, seed=8)
    j = 25  # row 5 of sequence 1
    if where == "w_pos":
        inputs["w_pos"][15 + 3] = float("nan")  # relative position 3
    else:
        inputs[where][j] = float("nan")
    out = call(sk.unified_attention, inputs, backend=backend, window=3)
    bad = set((~torch.isfinite(out)).flatten(1).any(1).nonzero().flatten().tolist())
    assert bad, "the NaN must show somewhere"
    if where == "w_pos":  # window 3: behaviors use relative positions 0..2; targets n - j include 3
        assert bad == {18, 19, 59}
        return
    assert bad <= set(range(20, 40)), f"{where} leaked across sequences: {sorted(bad)}"
    if where == "q":
        assert bad == {j}
    if where == "k" and backend == "triton":
        assert bad == {25, 26, 27}  # the rows whose window holds row 5 (sequence 1 has no targets)


def test_the_interpreter_path_names_the_triton_it_needs(monkeypatch):
    """triton 3.6's interpreter cannot run the kernels (loop bounds loaded from memory): a clear
    ValueError naming ``backend`` instead of an error from inside the interpreter."""
    import triton

    from suan_kernels.ops.unified_attention import op

    monkeypatch.setattr(triton, "__version__", "3.6.0")
    with pytest.raises(ValueError, match=r"backend: .*triton >= 3\.7 \(installed: 3\.6\.0\)"):
        call(sk.unified_attention, make_inputs([5], [1]), backend="triton")
    for ok in ("3.7.0", "3.9.0", "3.10.1+gitabc"):
        op.check_interpreter_version(ok)


@pytest.mark.parametrize("mode", ["fixed", "float"])
def test_a_nan_gradient_reaches_the_bias_table_gradients(mode):
    """A NaN in q inside a full tile (every pair allowed: the steady loop, which has no NaN guard)
    gives NaN in the bias-table gradients, never a finite wrong value: all of them in the default
    fixed-point mode (an int64 accumulator cannot hold a NaN), entries the reference has NaN in
    float mode. Without the NaN the same call is finite."""
    inputs = make_inputs([150], [2], heads=1, head_dim=16, requires_grad=True, seed=11)
    names = ("w_pos", "w_time")

    def table_grads(backend):
        out = call(sk.unified_attention, inputs, backend=backend)
        return torch.autograd.grad(out.sum(), [inputs[n] for n in names])

    sk.set_bias_grad_mode(mode)
    try:
        assert all(torch.isfinite(g).all() for g in table_grads("triton"))
        with torch.no_grad():
            inputs["q"][100] = float("nan")  # row 100: block 1 attends to block 0 in a full tile
        ref = table_grads("reference")
        got = table_grads("triton")
    finally:
        sk.set_bias_grad_mode("fixed")
    for n, r, g in zip(names, ref, got):
        assert torch.isnan(r).any(), n
        if mode == "fixed":
            assert torch.isnan(g).all(), n
        else:
            # NaN where the reference has it (the masked tiles' guard may keep some of the
            # reference's NaN out: a disallowed pair times a NaN), never where it is finite
            assert torch.isnan(g).any() and not (torch.isnan(g) & ~torch.isnan(r)).any(), n
