"""Property-based fuzzing of the op's input handling: random jagged batches, targets, patterns and
dtypes (the shared strategies) with every tensor argument in a random memory layout (contiguous,
a step-2 view, q/k/v with the head dim not innermost) and metadata in random integer dtypes.
Both backends (Triton under the interpreter on CPU) must give the answer of the contiguous call,
and the reference the loop oracle's."""
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import suan_kernels as sk
from suan_kernels.ops.unified_attention.naive import dense_attention
from support.closeness import assert_close
from support.jagged import call
from support.strategies import examples, op_cases

LAYOUTS = ("contiguous", "step2", "transposed")


def _relayout(t, layout):
    if t is None or layout == "contiguous":
        return t
    grad = t.requires_grad
    x = t.detach()
    if layout == "transposed" and x.dim() == 3:
        y = x.transpose(1, 2).contiguous().transpose(1, 2)
    else:
        buf = torch.zeros((x.shape[0] * 2,) + tuple(x.shape[1:]), dtype=x.dtype)
        buf[::2] = x
        y = buf[::2]
    return y.requires_grad_(grad) if grad else y


@st.composite
def fuzz_inputs(draw):
    case = draw(op_cases(max_heads=3, head_dims=(8, 16, 32)))
    layouts = {name: draw(st.sampled_from(LAYOUTS)) for name in
               ("q", "k", "v", "offsets", "timestamps", "num_targets", "w_pos", "w_time")}
    int_dtypes = {name: draw(st.sampled_from([torch.int64, torch.int32]))
                  for name in ("offsets", "num_targets", "timestamps")}
    return case, layouts, int_dtypes


@settings(max_examples=examples(30))
@given(spec=fuzz_inputs())
def test_any_layout_and_metadata_dtype_gives_the_contiguous_answer(spec):
    case, layouts, int_dtypes = spec
    inputs = case.inputs(requires_grad=False)
    pattern = dict(window=case.pattern.window, dilation=case.pattern.dilation, num_global=case.pattern.num_global,
                   scale=case.scale)
    fuzzed = dict(inputs)
    for name, dt in int_dtypes.items():
        x = fuzzed[name]
        fits = x is not None and (x.numel() == 0 or int(x.abs().max()) < torch.iinfo(dt).max)
        if fits and not x.is_floating_point():
            fuzzed[name] = x.to(dt)
    for name, layout in layouts.items():
        fuzzed[name] = _relayout(fuzzed[name], layout)
    for backend in ("reference", "triton"):
        want = call(sk.unified_attention, inputs, backend=backend, **pattern)
        got = call(sk.unified_attention, fuzzed, backend=backend, **pattern)
        assert got.shape == want.shape and got.dtype == want.dtype
        assert_close(got, want, case.dtype, f"{backend} out")
        if backend == "reference" and case.dtype == torch.float32:
            assert_close(got, call(dense_attention, inputs, **pattern), torch.float32, "reference vs oracle")
