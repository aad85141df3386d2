"""The Triton kernels compile for Hopper (sm_90) without a GPU (``bench/compile_check.py``).

The interpreter runs the kernels' arithmetic but never compiles them, so an error that only the
GPU compiler sees (types across branches, layouts, shared memory, dot shapes) would otherwise go
unnoticed on CPU machines. These tests capture the launches a CUDA call would make, compile
them to a cubin with the ptxas shipped in the triton wheel, and check that the forward and dk/dv
configurations are free of register spills.
"""
import pytest
import torch

from bench import compile_check as cc
from suan_kernels import AttentionPattern


def _missing_tools():
    try:
        cc._bin("ptxas")
        cc._bin("cuobjdump")
    except (FileNotFoundError, ImportError) as e:
        return str(e)
    return None


pytestmark = pytest.mark.skipif(_missing_tools() is not None, reason=f"no CUDA toolchain in triton: {_missing_tools()}")


@pytest.fixture(scope="module")
def module():
    return cc._compiled_module()


def test_captured_launches_are_what_cuda_would_run(module):
    launches = cc.capture_launches(cc.Case(dtype="bf16", pattern=AttentionPattern(8, 3, 1)), module)
    names = [(lch.kernel, lch.pass_name) for lch in launches]
    assert names == [("attn_fwd", "A"), ("attn_fwd", "B"), ("attn_bwd_delta", "A"), ("attn_bwd_dq", "A"),
                     ("attn_bwd_dkdv", "A"), ("attn_bwd_dq", "B"), ("attn_bwd_dkdv", "B")]
    for lch in launches:
        sig, consts = cc.signature_of(lch.fn, lch.args, lch.bind())
        assert set(sig) == set(lch.fn.arg_names)
        if lch.kernel == "attn_bwd_delta":
            assert sig["OUT"] == "*bf16" and sig["DELTA"] == "*fp32"
            continue
        # timestamps rebased per sequence to int32 offsets; the head group comes with the config
        assert sig["Q"] == "*bf16" and sig["OFFS"] == "*i64" and sig["TS"] == "*i32"
        assert consts["G"] >= 1 and consts["EVEN_HEADS"] == (4 % consts["G"] == 0)
        # compiled-mode choices, not the interpreter's: 64-row blocks, bf16 operands straight to tl.dot
        assert consts["BLOCK"] == 64 and consts["UPCAST"] is False
        assert consts["PASS_B"] == (lch.pass_name == "B")


def test_float_timestamps_take_their_own_path(module):
    """float64 timestamps reach the kernels as float64 (TS_MODE 2): no int32-only code on them
    (the forward's pinned key-timestamp load, an asm move of 32 bits, is for int32 offsets only)."""
    launches = cc.capture_launches(cc.Case(dtype="bf16", lengths=(200, 9), targets=(2, 1), ts_float=True), module)
    for lch in launches:
        if lch.kernel == "attn_bwd_delta":
            continue
        sig, consts = cc.signature_of(lch.fn, lch.args, lch.bind())
        assert sig["TS"] == "*fp64" and consts["TS_MODE"] == 2 and consts["TS_SORTED"] is False


@pytest.mark.parametrize("in_order", [True, False])
def test_the_case_chooses_the_time_order_path(module, in_order):
    """The report's case has each sequence's behaviors in time order (TS_SORTED); ``--out-of-order``
    shuffles them, so the same report measures the path with |dt| a pair."""
    launches = cc.capture_launches(cc.Case(dtype="bf16", lengths=(200, 9), targets=(2, 1), ts_in_order=in_order),
                                   module)
    consts = [cc.signature_of(lch.fn, lch.args, lch.bind())[1] for lch in launches if lch.kernel != "attn_bwd_delta"]
    assert consts and all(c["TS_SORTED"] is in_order for c in consts)


def test_fp32_uses_ieee_dot(module):
    launches = cc.capture_launches(cc.Case(dtype="fp32"), module)
    consts = [cc.signature_of(lch.fn, lch.args, lch.bind())[1] for lch in launches if lch.kernel != "attn_bwd_delta"]
    assert all(c["IEEE"] is True for c in consts)


@pytest.mark.parametrize("case", [
    cc.Case(dtype="bf16"),
    cc.Case(dtype="fp16", head_dim=32, value_dim=16, heads=2, pattern=AttentionPattern(16, 4, 2)),
    cc.Case(dtype="fp32", head_dim=128, value_dim=128, lengths=(90, 1), targets=(2, 1)),
    cc.Case(dtype="bf16", lengths=(200, 9), targets=(2, 1), ts_float=True),
], ids=["bf16-dense", "fp16-sparse-dv16", "fp32-dh128", "bf16-float-timestamps"])
def test_kernels_compile_for_sm90(case, module):
    rows = cc.check_case(case, arch=90, all_configs=False, module=module)
    names = {(r.kernel, r.pass_name) for r in rows}
    assert {("attn_fwd", "A"), ("attn_bwd_dq", "A"), ("attn_bwd_dkdv", "A")} <= names
    if case.pattern.dilation is not None:
        assert {("attn_fwd", "B"), ("attn_bwd_dq", "B"), ("attn_bwd_dkdv", "B")} <= names
    for r in rows:
        assert 0 < r.registers <= 255
        assert r.shared_bytes <= 227 * 1024  # an H100/H200 SM's shared memory per block


def test_forward_and_dkdv_configs_are_spill_free(module):
    """Every autotune configuration the GPU can pick for the bf16 dh=64 forward and dk/dv keeps
    everything in registers (the dq kernel's bias-gradient code still spills: bench/RESULTS.md)."""
    rows = cc.check_case(cc.Case(dtype="bf16"), arch=90, module=module)
    for kernel in ("attn_fwd", "attn_bwd_dkdv"):
        mine = [r for r in rows if r.kernel == kernel]
        assert len(mine) == len(getattr(module, kernel).configs)
        assert max(r.stack_bytes for r in mine) == 0, cc.format_table(mine)


def test_signature_rejects_untyped_arguments(module):
    launch = cc.capture_launches(cc.Case(dtype="bf16", lengths=(5,), targets=(1,)), module)[0]
    fn = launch.fn
    with pytest.raises(ValueError, match="does not pass"):
        cc.signature_of(fn, (), {})
    args = list(launch.args)
    args[0] = object()
    with pytest.raises(ValueError, match="cannot type argument Q"):
        cc.signature_of(fn, tuple(args), launch.bind())
    assert torch.bfloat16 in cc._TRITON_TYPES


def test_command_line_writes_table_and_json(tmp_path, capsys):
    out = tmp_path / "usage.json"
    assert cc.main(["--dtypes", "bf16", "--head-dims", "16", "--first-config", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert text.count("| kernel | pass |") == 1  # one header, rows streamed per case
    assert "variants compiled for sm_90" in text
    import json

    rows = json.loads(out.read_text())
    assert {(r["kernel"], r["pattern"]) for r in rows} >= {("attn_fwd", "dense"), ("attn_bwd_dkdv", "w32-r4-g2")}
    assert all(r["registers"] > 0 and r["num_warps"] in (4, 8) for r in rows)


def test_hot_loop_report_parses(module):
    """The hot-loop report (bench/hot_loop.py) on a small case: every kernel's tensor-core loops
    are found and counted, the yardstick too, and the summary holds both figures (no thresholds:
    the figures are measurements, bench/RESULTS.md)."""
    from bench import hot_loop

    case = cc.Case(dtype="bf16", lengths=(200, 130), targets=(1, 1))
    rep = hot_loop.report(case, module=module)
    assert {v.role for v in rep["ours"]} >= {"fwd", "dq", "dkdv"}
    for v in rep["ours"] + rep["yardstick"]:
        if v.role in ("fwd", "dq", "dkdv") and v.pass_name in ("A", "-"):
            assert v.loops and all(r.tensor > 0 and r.other > 0 for r in v.loops), v.kernel
            # the tile's own tensor-core work, at most what its instructions issue
            assert v.useful_flop > 0 and all(v.duplication(r) >= 1 - 1e-9 for r in v.loops), v.kernel
    dq = [v for v in rep["ours"] if v.kernel == "attn_bwd_dq"][0]
    assert dq.loops[0].inner_iterations >= 1.0  # the time-bucket loop counted at its mean trip count
    for what in ("forward", "backward"):
        s = rep["summary"][what]
        assert s["ours"] > 0 and s["yardstick"] > 0 and abs(s["ratio"] - s["ours"] / s["yardstick"]) < 1e-9
    text = hot_loop.format_report(rep)
    assert "| figure | ours | yardstick | ratio | target |" in text and "non-TC per needed kFLOP" in text
