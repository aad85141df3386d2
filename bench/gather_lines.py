"""Cache lines a warp's joint-table gather touches per load instruction, position-major against
bucket-major, on the benchmark's own timestamps (no GPU needed).

The first H200 lease showed the bias costing 4.6x in the forward although the hot loop's
instruction count was only 2x the yardstick's: the cost is in memory. In the wgmma accumulator
layout of a [64, 64] fp32 tile at 4 warps, one load instruction of a warp covers 8 rows x 4
columns (lane l: row l // 4 (+8), column 2 (l % 4) (+1) + 8k), i.e. about 14 relative positions
near one diagonal. A position-major table ``[2P-1, NBW]`` puts each relative position in a row of
its own; a bucket-major one ``[buckets, JROW]`` puts them next to each other. Each distinct
128-byte line is an L1 wavefront (the LSU's issue cost of a gather).

    python bench/gather_lines.py [--length 4096] [--tiles 200]
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import NUM_BUCKETS, make_case  # noqa: E402


def _bucket(dt: np.ndarray, nb: int) -> np.ndarray:
    return np.minimum(np.floor(np.log2(np.maximum(np.abs(dt), 1))).astype(np.int64), nb)


def lines_per_instruction(length: int, tiles: int, seed: int = 0) -> dict:
    """Mean distinct 128-B lines and 32-B sectors per warp load instruction, per layout."""
    case = make_case(length, B=4, H=1, dh=16, dtype=torch.float32, device="cpu")
    ts = case.timestamps.view(4, length).numpy()
    P = length + 1  # the benchmark's w_pos holds 2L + 1 entries
    nbw_old = 1 << int(np.ceil(np.log2(NUM_BUCKETS + 1)))  # the former row length
    jrow = 1 << int(np.ceil(np.log2(2 * P - 1)))
    rng = np.random.default_rng(seed)
    lanes = np.arange(32)
    found = {"position-major [2P-1, NBW]": [], "bucket-major [buckets, JROW]": []}
    for _ in range(tiles):  # random full tiles below the diagonal
        b = rng.integers(4)
        qb = rng.integers(1, length // 64)
        kb = rng.integers(0, qb)
        i, j = qb * 64 + np.arange(64), kb * 64 + np.arange(64)
        for warp in range(4):
            for k in range(8):
                for half in range(2):
                    for col in range(2):
                        rows = i[16 * warp + lanes // 4 + 8 * half]
                        cols = j[2 * (lanes % 4) + col + 8 * k]
                        bk = _bucket(ts[b, rows] - ts[b, cols], NUM_BUCKETS)
                        r = rows - cols + P - 1
                        for name, addr in zip(found, ((r * nbw_old + bk) * 4, (bk * jrow + r) * 4)):
                            found[name].append((len(np.unique(addr // 128)), len(np.unique(addr // 32))))
    return {name: np.array(v).mean(0) for name, v in found.items()}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--length", type=int, default=4096)
    ap.add_argument("--tiles", type=int, default=200)
    args = ap.parse_args(argv)
    for name, (lines, sectors) in lines_per_instruction(args.length, args.tiles).items():
        print(f"{name:28s} lines/instruction {lines:5.2f}  sectors/instruction {sectors:5.2f}  "
              f"line wavefronts per 64x64 tile (4 warps x 32 loads): {lines * 128:6.0f}")


if __name__ == "__main__":
    main()
