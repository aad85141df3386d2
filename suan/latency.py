"""Inference latency per request: SUAN vs LightSUAN at several (L behaviors, K candidates).

Per (L, K): one pass over ``[history, K candidates]`` for SUAN and LightSUAN, and LightSUAN
scoring against a behavior cache (the history encoded once beforehand; ``cached=True``).
"""
from __future__ import annotations

import dataclasses

import time
from typing import Iterable, List, Optional

import numpy as np
import torch

from .batch import random_batch
from .cache import BehaviorCache
from .config import config_for_grade, light_pattern
from .models import SUAN, LightSUAN


def time_call(fn, warmup: int = 1, repeat: int = 5, min_seconds: float = 0.0) -> float:
    """Median wall time of ``fn()`` in milliseconds (synchronizing CUDA around each call)."""
    for _ in range(warmup):
        fn()
    times = []
    start_all = time.perf_counter()
    while len(times) < repeat or (time.perf_counter() - start_all) < min_seconds:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1e3)
        if len(times) >= 50:
            break
    times.sort()
    return times[len(times) // 2]


def random_candidates(schema, K: int, device="cpu", seed: int = 0) -> torch.Tensor:
    """``[K, target fields]`` int64 candidate ids drawn uniformly from each field's vocabulary (ids >= 1)."""
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randint(1, schema.behavior_fields[i].vocab_size, (K,), generator=g)
                        for i in schema.target_field_index()], 1).to(device)


def median_test_request(store, max_len: int) -> dict:
    """One request's history (CPU): the test sample whose history length is the median."""
    from .data.loader import build_batch

    split = store.split("test")
    lens = np.asarray(split.columns["hist_end"]) - np.asarray(split.columns["hist_start"])
    i = int(np.argsort(lens)[len(lens) // 2])
    return build_batch(store, split, np.array([i]), max_len).to("cpu").sample(0)


def latency_table(grade: str = "g2", lengths: Iterable[int] = (256, 1024), candidates: Iterable[int] = (1, 100),
                  device: str = "cpu", repeat: int = 5, window: Optional[int] = None,
                  dilation: Optional[int] = None, num_global: Optional[int] = None,
                  cached: bool = False) -> List[dict]:
    """Forward latency of one request (one user, L behaviors, K candidates) per model."""
    rows = []
    for L in lengths:
        given = {"window": window, "dilation": dilation, "num_global": num_global}
        pattern = dataclasses.replace(light_pattern(L), **{k: v for k, v in given.items() if v is not None})
        suan = SUAN(config_for_grade(grade, max_len=L)).to(device).eval()
        light = LightSUAN(config_for_grade(grade, max_len=L).with_pattern(pattern)).to(device).eval()
        history = random_batch(suan.cfg.schema, 1, L, 1, min_len=L, seed=L, device=device).sample(0)
        cache = BehaviorCache(light, max_bytes=1 << 30)
        for K in candidates:
            cands = random_candidates(suan.cfg.schema, K, device, seed=K)
            row = {"L": L, "K": K, **dataclasses.asdict(pattern)}
            with torch.no_grad():
                row["suan_ms"] = time_call(lambda: suan.score(history, cands), repeat=repeat)
                row["lightsuan_ms"] = time_call(lambda: light.score(history, cands), repeat=repeat)
                if cached:
                    cache.get(history)  # encoded once, outside the timing
                    row["lightsuan_cached_ms"] = time_call(lambda: cache.score(history, cands), repeat=repeat)
            row["ratio"] = row["lightsuan_ms"] / row["suan_ms"]
            rows.append(row)
    return rows


def format_latency(rows: List[dict]) -> str:
    cached = any("lightsuan_cached_ms" in r for r in rows)
    head = "| L | K | window | dilation | global | SUAN ms | LightSUAN ms | LightSUAN/SUAN |"
    sep = "|---:|---:|---:|---:|---:|---:|---:|---:|"
    if cached:
        head += " LightSUAN cached ms | cached/SUAN |"
        sep += "---:|---:|"
    lines = [head, sep]
    for r in rows:
        line = (f"| {r['L']} | {r['K']} | {r['window']} | {r['dilation']} | {r['num_global']} | "
                f"{r['suan_ms']:.2f} | {r['lightsuan_ms']:.2f} | {r['ratio']:.2f} |")
        if cached:
            line += f" {r['lightsuan_cached_ms']:.2f} | {r['lightsuan_cached_ms'] / r['suan_ms']:.2f} |"
        lines.append(line)
    return "\n".join(lines)
