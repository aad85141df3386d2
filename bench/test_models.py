"""Model-level benchmarks: inference per request (SUAN vs LightSUAN; one pass vs K separate
passes; cached vs uncached) at L in {256, 1024, 4096} and K in {1, 100, 1000}, and a training
step's samples/s per grade.

On CPU, L=4096 and K separate passes above 100 are left out unless SUAN_BENCH_FULL=1
(they take minutes); on CUDA everything runs.
"""
import os

import pytest
import torch

from common import CUDA, DEVICE, sync
from suan import LightSUAN, SUAN, config_for_grade, random_batch
from suan.cache import BehaviorCache
from suan.config import light_pattern
from suan.latency import random_candidates

FULL = CUDA or os.environ.get("SUAN_BENCH_FULL") == "1"
MODEL_LENGTHS = [256, 1024, 4096] if FULL else [256, 1024]
CANDIDATES = [1, 100, 1000]
GRADE = "g2"
_MODELS = {}


def _models(L):
    if L not in _MODELS:
        _MODELS.clear()
        torch.manual_seed(0)
        suan = SUAN(config_for_grade(GRADE, max_len=L)).to(DEVICE).eval()
        light = LightSUAN(config_for_grade(GRADE, max_len=L).with_pattern(light_pattern(L))).to(DEVICE).eval()
        history = random_batch(suan.cfg.schema, 1, L, 1, min_len=L, seed=L, device=DEVICE).sample(0)
        _MODELS[L] = (suan, light, history)
    return _MODELS[L]


@pytest.mark.parametrize("num_candidates", CANDIDATES)
@pytest.mark.parametrize("impl", ["suan", "lightsuan", "lightsuan-cached", "lightsuan-separate"])
@pytest.mark.parametrize("seq_len", MODEL_LENGTHS)
def test_inference_per_request(benchmark, record, seq_len, impl, num_candidates):
    K = num_candidates
    if impl == "lightsuan-separate" and not FULL and (K > 100 or seq_len > 256):
        pytest.skip("K separate passes: K <= 100 at L=256 on CPU (SUAN_BENCH_FULL=1 for all)")
    suan, light, history = _models(seq_len)
    cands = random_candidates(suan.cfg.schema, K, DEVICE, seed=K)
    benchmark.group = f"inference L={seq_len} K={K}"
    cache = None
    if impl == "suan":
        fn = lambda: suan.score(history, cands)  # noqa: E731
    elif impl == "lightsuan":
        fn = lambda: light.score(history, cands)  # noqa: E731
    elif impl == "lightsuan-cached":
        cache = BehaviorCache(light, max_bytes=1 << 30)
        cache.get(history)  # encoded once, before the timing (a call digests the history: part of its cost)
        fn = lambda: cache.score(history, cands)  # noqa: E731
    else:
        fn = lambda: [light.score(history, cands[i:i + 1]) for i in range(K)]  # noqa: E731

    def call():
        with torch.no_grad():
            out = fn()
        sync()
        return out

    call()
    benchmark(call)
    record(f"inference_K{K}", seq_len, impl, baselines=["suan", "lightsuan"] if impl != "suan" else (),
           device=DEVICE, grade=GRADE, num_candidates=K, ms_per_candidate=benchmark.stats.stats.median * 1e3 / K)


TRAIN_GRADES = ["g0", "g1", "g2", "g3"] + (["g4", "g5"] if CUDA else [])


@pytest.mark.parametrize("impl", TRAIN_GRADES)
@pytest.mark.parametrize("seq_len", [64])
def test_train_step(benchmark, record, seq_len, impl):
    torch.manual_seed(0)
    cfg = config_for_grade(impl, max_len=seq_len)
    model = SUAN(cfg).to(DEVICE).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    batch_size = 256
    batch = random_batch(cfg.schema, batch_size, seq_len, 1, min_len=seq_len // 2, seed=1, device=DEVICE)
    benchmark.group = f"train step L={seq_len}"

    def step():
        with torch.autocast(device_type=DEVICE, dtype=torch.bfloat16, enabled=CUDA):
            loss = torch.nn.functional.binary_cross_entropy_with_logits(model(batch), batch.labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sync()

    step()
    benchmark(step)
    median = benchmark.stats.stats.median
    record("train_step", seq_len, impl, device=DEVICE, batch_size=batch_size,
           samples_per_s=batch_size / median, non_embedding_params=model.parameter_counts()["non_embedding"])
