"""The pattern value and the tensor-form mask + bias builder against the loop oracle: the rules
every PyTorch-side implementation (reference, SDPA/Flex benchmarks, HSTU baseline) shares."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from suan_kernels.ops.unified_attention import (DENSE, AttentionPattern, padded_mask_and_bias, pair_allowed,
                                                position_index, time_bucket)
from suan_kernels.ops.unified_attention.naive import allowed_pair, bucket_of, dense_attention
from support.closeness import assert_close
from support.jagged import call
from support.strategies import examples, op_cases, patterns


@pytest.mark.parametrize("kw,name", [({"window": 0}, "window"), ({"dilation": -2}, "dilation"),
                                     ({"window": 2.5}, "window"), ({"num_global": -1}, "num_global"),
                                     ({"dilation": True}, "dilation")])
def test_invalid_pattern_names_the_field(kw, name):
    with pytest.raises(ValueError, match=f"^{name}:"):
        AttentionPattern(**kw)


@settings(max_examples=examples(60))
@given(pattern=patterns, n=st.integers(0, 40))
def test_allows_matches_the_oracle(pattern, n):
    i = torch.arange(n)[:, None]
    j = torch.arange(n)[None, :]
    got = pattern.allows(i, j) if n else torch.zeros(0, 0, dtype=torch.bool)
    want = torch.tensor([[allowed_pair(a, b, n, pattern.window, pattern.dilation, pattern.num_global)
                          for b in range(n)] for a in range(n)], dtype=torch.bool).reshape(n, n)
    assert torch.equal(got, want)
    # the effective form allows the same pairs for sequences up to n behaviors
    eff = pattern.effective(n)
    assert torch.equal(eff.allows(i, j) if n else got, got)
    assert AttentionPattern.from_list(pattern.to_list()) == pattern or not pattern.sparse
    assert pattern.sparse or eff is DENSE


@settings(max_examples=examples(40))
@given(pattern=patterns, n=st.integers(0, 12), k=st.integers(0, 4))
def test_pair_allowed_covers_targets(pattern, n, k):
    L = n + k
    i = torch.arange(L)[:, None]
    j = torch.arange(L)[None, :]
    got = pair_allowed(pattern, i, j, torch.tensor(n))
    want = torch.tensor([[allowed_pair(a, b, n, pattern.window, pattern.dilation, pattern.num_global)
                          for b in range(L)] for a in range(L)], dtype=torch.bool).reshape(L, L)
    assert torch.equal(got, want)


def test_time_bucket_and_position_index():
    dt = torch.tensor([0, 1, 2, 3, 4, 7, 8, 2**24 - 1, 2**24, 2**40, 2**52 - 1])
    assert time_bucket(dt, 128).tolist() == [bucket_of(int(x), 128) for x in dt]
    assert time_bucket(dt, 5).tolist() == [bucket_of(int(x), 5) for x in dt]
    assert position_index(torch.tensor([-9, -3, 0, 3, 9]), 4).tolist() == [0, 0, 3, 6, 6]


@settings(max_examples=examples(30))
@given(case=op_cases(dtypes=(torch.float32,), max_heads=2, head_dims=(4, 8)))
def test_padded_mask_and_bias_give_the_op(case):
    """Softmax over the padded [B, L, L] mask + bias (what the SDPA benchmark feeds) is the op."""
    inputs = case.inputs(requires_grad=False)
    offsets = inputs["offsets"]
    B = offsets.numel() - 1
    allowed, bias, rows, valid = padded_mask_and_bias(offsets, inputs["num_targets"], inputs["timestamps"],
                                                      inputs["w_pos"], inputs["w_time"], case.num_buckets,
                                                      case.pattern)
    L = rows.shape[1]
    H = case.heads
    assert allowed.shape == bias.shape == (B, L, L) and valid.sum() == case.tokens
    if case.tokens == 0:
        return
    scale = case.scale if case.scale is not None else case.head_dim ** -0.5
    q, k, v = (inputs[n][rows.reshape(-1)].view(B, L, H, -1).transpose(1, 2) for n in ("q", "k", "v"))
    s = q @ k.transpose(-1, -2) * scale + bias[:, None]
    s = s.masked_fill(~allowed[:, None], float("-inf"))
    p = torch.softmax(s, -1).nan_to_num(0.0)  # padded rows see nothing
    out = (p @ v).transpose(1, 2)[valid]
    pattern = dict(window=case.pattern.window, dilation=case.pattern.dilation, num_global=case.pattern.num_global)
    want = call(dense_attention, inputs, scale=case.scale, **pattern)
    assert_close(out, want, torch.float32, "padded softmax")
