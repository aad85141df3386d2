"""Inference latency per request: SUAN vs LightSUAN at several (L behaviors, K candidates)."""
from __future__ import annotations

import time
from typing import Iterable, List, Optional

import torch

from .batch import random_batch
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


def latency_table(grade: str = "g2", lengths: Iterable[int] = (256, 1024), candidates: Iterable[int] = (1, 100),
                  device: str = "cpu", repeat: int = 5, window: Optional[int] = None,
                  dilation: Optional[int] = None, num_global: Optional[int] = None) -> List[dict]:
    """Forward latency of one request (one user, L behaviors, K candidates) per model."""
    rows = []
    for L in lengths:
        pattern = light_pattern(L)
        if window is not None:
            pattern["window"] = window
        if dilation is not None:
            pattern["dilation"] = dilation
        if num_global is not None:
            pattern["num_global"] = num_global
        suan = SUAN(config_for_grade(grade, max_len=L)).to(device).eval()
        light = LightSUAN(config_for_grade(grade, max_len=L, **pattern)).to(device).eval()
        for K in candidates:
            batch = random_batch(suan.cfg.schema, 1, L, K, min_len=L, seed=L + K, device=device)
            row = {"L": L, "K": K, **pattern}
            with torch.no_grad():
                row["suan_ms"] = time_call(lambda: suan(batch), repeat=repeat)
                row["lightsuan_ms"] = time_call(lambda: light(batch), repeat=repeat)
            row["speedup"] = row["suan_ms"] / row["lightsuan_ms"]
            rows.append(row)
    return rows


def format_latency(rows: List[dict]) -> str:
    lines = ["| L | K | window | dilation | global | SUAN ms | LightSUAN ms | speedup |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['L']} | {r['K']} | {r['window']} | {r['dilation']} | {r['num_global']} | "
                     f"{r['suan_ms']:.2f} | {r['lightsuan_ms']:.2f} | {r['speedup']:.2f}x |")
    return "\n".join(lines)
