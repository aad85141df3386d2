"""Parallel scoring of many candidates and the behavior cache."""
import pytest
import torch

import suan_kernels as kernels
from support.jagged import make_inputs
from suan import SUAN, LightSUAN, collate, config_for_grade, random_batch
from suan.cache import BehaviorCache


def _candidates(cfg, K, seed=0):
    g = torch.Generator().manual_seed(seed)
    fields = cfg.schema.behavior_fields
    return torch.stack([torch.randint(1, fields[i].vocab_size, (K,), generator=g)
                        for i in cfg.schema.target_field_index()], 1)


def test_target_attention_equals_unified_attention_rows():
    n, K = 29, 7
    inputs = make_inputs([n + K], [K], heads=3, head_dim=8, value_dim=4)
    full = kernels.unified_attention(inputs["q"], inputs["k"], inputs["v"], inputs["offsets"], inputs["timestamps"],
                                     inputs["num_targets"], inputs["w_pos"], inputs["w_time"],
                                     num_buckets=inputs["num_buckets"], window=3, dilation=4)
    ts = inputs["timestamps"]
    ts_t = ts[n:]
    out = kernels.target_attention(inputs["q"][n:], inputs["k"][n:], inputs["v"][n:], inputs["k"][:n],
                                   inputs["v"][:n], ts[:n], ts_t, inputs["w_pos"], inputs["w_time"],
                                   num_buckets=inputs["num_buckets"], chunk=3)
    torch.testing.assert_close(out, full[n:], atol=1e-6, rtol=1e-5)


def test_target_attention_validates_shapes():
    q = torch.randn(3, 2, 4)
    with pytest.raises(ValueError, match="k_beh"):
        kernels.target_attention(q, q, q, torch.randn(5, 3, 4), torch.randn(5, 3, 4))


@pytest.mark.parametrize("light", [False, True])
def test_parallel_scoring_2000_candidates(light):
    torch.manual_seed(0)
    cfg = config_for_grade("g1", light=light, max_len=256)
    model = (LightSUAN if light else SUAN)(cfg).eval()
    history = random_batch(cfg.schema, 1, 256, 1, min_len=200, seed=3).sample(0)
    cands = _candidates(cfg, 2000)
    scores = model.score(history, cands)
    assert scores.shape == (2000,) and torch.isfinite(scores).all()
    with torch.no_grad():
        for t in (0, 777, 1999):
            single = model(collate([dict(history, targets=cands[t:t + 1], labels=None)]))
            assert (single - scores[t]).abs().max() < 1e-5
    cache = BehaviorCache(model)
    cached = model.score(history, cands, cache=cache, key="u")
    assert (cached - scores).abs().max() < 1e-5


def test_cached_scoring_equals_uncached_over_batches():
    torch.manual_seed(1)
    cfg = config_for_grade("g2", light=True, max_len=128)
    model = LightSUAN(cfg).eval()
    cache = BehaviorCache(model, max_bytes=64 << 20)
    histories = [random_batch(cfg.schema, 1, 128, 1, min_len=1, seed=s).sample(0) for s in range(3)]
    for rnd in range(2):
        for u, h in enumerate(histories):
            cands = _candidates(cfg, 50, seed=10 * rnd + u)
            assert (model.score(h, cands, cache=cache, key=u) - model.score(h, cands)).abs().max() < 1e-5
    assert cache.misses == 3 and cache.hits == 3 and len(cache) == 3


def test_cache_invalidated_when_parameters_change():
    torch.manual_seed(2)
    cfg = config_for_grade("g0", light=True, max_len=64)
    model = LightSUAN(cfg).eval()
    cache = BehaviorCache(model)
    h = random_batch(cfg.schema, 1, 64, 1, min_len=10, seed=1).sample(0)
    cands = _candidates(cfg, 5)
    before = model.score(h, cands, cache=cache, key="u")
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    model.train()
    batch = random_batch(cfg.schema, 8, 64, 1, seed=2)
    torch.nn.functional.binary_cross_entropy_with_logits(model(batch), batch.labels).backward()
    opt.step()
    model.eval()
    after = model.score(h, cands, cache=cache, key="u")
    assert cache.invalidations >= 1
    assert (after - model.score(h, cands)).abs().max() < 1e-5
    assert (after - before).abs().max() > 1e-4


def test_cache_is_bounded_in_bytes_lru():
    cfg = config_for_grade("g0", light=True, max_len=64)
    model = LightSUAN(cfg).eval()
    hs = [random_batch(cfg.schema, 1, 64, 1, min_len=64, seed=s).sample(0) for s in range(5)]
    one = model.encode_history(hs[0]).nbytes()
    cache = BehaviorCache(model, max_bytes=int(2.5 * one))
    for h in hs[:4]:
        cache.get(h)
    assert len(cache) == 2 and cache.nbytes <= cache.max_bytes and cache.evictions == 2
    assert cache.contains(hs[3]) and cache.contains(hs[2]) and not cache.contains(hs[0])
    cache.get(hs[2])  # touch: 2 becomes most recent
    cache.get(hs[4])
    assert cache.contains(hs[2]) and not cache.contains(hs[3])
    with pytest.raises(ValueError, match="max_bytes"):
        BehaviorCache(model, max_bytes=0)
    with pytest.raises(ValueError, match="history"):
        cache.get("user42")


def test_cache_never_serves_another_history_of_the_same_user():
    """Two requests with the same user, request time and history length but different behaviors
    (or timestamps, features, dense values): each gets its own scores."""
    torch.manual_seed(3)
    cfg = config_for_grade("g0", light=True, max_len=64)
    model = LightSUAN(cfg).eval()
    cache = BehaviorCache(model)
    a = random_batch(cfg.schema, 1, 64, 1, min_len=30, seed=1).sample(0)
    variants = []
    b = dict(a, behaviors=a["behaviors"].flip(0))
    variants.append(b)
    c = dict(a, behavior_ts=a["behavior_ts"] - 3600)
    variants.append(c)
    f = a["features"].clone()
    f[0] = 1 if int(f[0]) != 1 else 2
    d = dict(a, features=f)
    variants.append(d)
    e = dict(a, dense=a["dense"] + 1.0)
    variants.append(e)
    cands = _candidates(cfg, 7)
    first = model.score(a, cands, cache=cache, key="user42")
    for v in variants:
        assert v["behaviors"].shape == a["behaviors"].shape and int(v["request_ts"]) == int(a["request_ts"])
        got = model.score(v, cands, cache=cache, key="user42")
        assert torch.allclose(got, model.score(v, cands), atol=1e-5), "stale cached scores"
        assert not torch.allclose(got, first, atol=1e-5)
    assert cache.misses == 5 and cache.hits == 0
    assert torch.allclose(model.score(a, cands, cache=cache, key="user42"), first) and cache.hits == 1
