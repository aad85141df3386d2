"""The Triton kernels compile for Hopper (sm_90) without a GPU (``bench/compile_check.py``).

The interpreter runs the kernels' arithmetic but never compiles them, so an error that only the
GPU compiler sees (types across branches, layouts, shared memory, dot shapes) would otherwise go
unnoticed on CPU machines. These tests capture the launches a CUDA call would make, compile
them to a cubin with the ptxas shipped in the triton wheel, and check the forward keeps an
autotune configuration free of register spills.
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
    assert names == [("attn_fwd", "A"), ("attn_fwd", "B"), ("attn_bwd_dq", "A"), ("attn_bwd_dkdv", "A"),
                     ("attn_bwd_dq", "B"), ("attn_bwd_dkdv", "B")]
    for lch in launches:
        sig, consts = cc.signature_of(lch.autotuner.fn, lch.args, lch.kwargs)
        assert set(sig) == set(lch.autotuner.fn.arg_names)
        assert sig["Q"] == "*bf16" and sig["OFFS"] == "*i64" and sig["TS"] == "*i64"
        # compiled-mode choices, not the interpreter's: 64-row blocks, bf16 operands straight to tl.dot
        assert consts["BLOCK"] == 64 and consts["UPCAST"] is False
        assert consts["PASS_B"] == (lch.pass_name == "B")


def test_fp32_uses_ieee_dot(module):
    launches = cc.capture_launches(cc.Case(dtype="fp32"), module)
    consts = [cc.signature_of(lch.autotuner.fn, lch.args, lch.kwargs)[1] for lch in launches]
    assert all(c["IEEE"] is True for c in consts)


@pytest.mark.parametrize("case", [
    cc.Case(dtype="bf16"),
    cc.Case(dtype="fp16", head_dim=32, value_dim=16, heads=2, pattern=AttentionPattern(16, 4, 2)),
    cc.Case(dtype="fp32", head_dim=128, value_dim=128, lengths=(90, 1), targets=(2, 1)),
], ids=["bf16-dense", "fp16-sparse-dv16", "fp32-dh128"])
def test_kernels_compile_for_sm90(case, module):
    rows = cc.check_case(case, arch=90, all_configs=False, module=module)
    names = {(r.kernel, r.pass_name) for r in rows}
    assert {("attn_fwd", "A"), ("attn_bwd_dq", "A"), ("attn_bwd_dkdv", "A")} <= names
    if case.pattern.dilation is not None:
        assert {("attn_fwd", "B"), ("attn_bwd_dq", "B"), ("attn_bwd_dkdv", "B")} <= names
    for r in rows:
        assert 0 < r.registers <= 255
        assert r.shared_bytes <= 227 * 1024  # an H100/H200 SM's shared memory per block


def test_forward_has_a_spill_free_config(module):
    """At least one autotune configuration of the bf16 dh=64 forward keeps everything in registers
    (the autotuner on the GPU can then pick it)."""
    rows = [r for r in cc.check_case(cc.Case(dtype="bf16"), arch=90, module=module) if r.kernel == "attn_fwd"]
    assert len(rows) == len(module.attn_fwd.configs)
    assert min(r.stack_bytes for r in rows) == 0, cc.format_table(rows)


def test_signature_rejects_untyped_arguments(module):
    fn = module.attn_fwd.fn
    with pytest.raises(ValueError, match="does not pass"):
        cc.signature_of(fn, (), {})
    launch = cc.capture_launches(cc.Case(dtype="bf16", lengths=(5,), targets=(1,)), module)[0]
    args = list(launch.args)
    args[0] = object()
    with pytest.raises(ValueError, match="cannot type argument Q"):
        cc.signature_of(fn, tuple(args), launch.kwargs)
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
