"""The hot-loop report: what the kernels' inner loops issue per tile, against FlashAttention-2.

For each kernel launch of a representative call (``compile_check.Case``) and each of its
autotune configurations, compiled for sm_90 exactly as a JIT launch would compile it, the SASS
of every loop that holds tensor-core instructions is counted (``bench/sass.py``): instructions
per iteration per warp, tensor-core instructions, the rest by class, and the rest per kFLOP of
tensor-core work. The same is done for the bias-free FlashAttention-2 yardstick
(``bench/flash_yardstick.py``).

A kernel's figure is its best loop (the steady-state loop: full tiles, no mask code) at its
best spill-free configuration; its masked loop is printed beside it. The backward figure
combines the dq and dk/dv kernels in proportion to their tensor-core work per (query, key,
head) pair (3 and 4 matmuls): non-tensor-core instructions over tensor-core kFLOP of the whole
backward. Targets (issue 13): forward <= 1.5x the yardstick, backward <= 2.0x.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from . import sass
from .compile_check import Case, _bin, capture_launches, jit_compile, resource_usage

ROLE = {"attn_fwd": "fwd", "attn_bwd_dq": "dq", "attn_bwd_dkdv": "dkdv",
        "fa_fwd": "fwd", "fa_bwd_dq": "dq", "fa_bwd_dkdv": "dkdv"}
MATMULS_PER_PAIR = {"fwd": 2, "dq": 3, "dkdv": 4}
TARGETS = {"forward": 1.5, "backward": 2.0}


@dataclass
class Variant:
    """One compiled kernel variant and its tensor-core loops."""

    source: str  # "ours" or "yardstick"
    kernel: str
    pass_name: str
    config: Dict[str, object]
    registers: int
    stack_bytes: int
    loops: List[sass.LoopReport] = field(default_factory=list)
    cubin: Optional[str] = None
    # tensor-core FLOP one loop iteration over a whole tile needs for the whole program (its tile:
    # rows x columns x head dims x matmuls x heads; a loop over sub-tiles scales it by the loop's
    # ``tile_fraction``); the instructions' own FLOP count it more than once where the
    # compiler computes a product in two warpgroups (a 64-row tile at 8 warps: each warpgroup
    # needs all of P / dS as the register operand of its half of the next matmul)
    useful_flop: Optional[float] = None

    @property
    def warps(self) -> int:
        return int(self.config.get("num_warps") or 4)

    def useful_per_warp(self, loop: sass.LoopReport) -> float:
        if not self.useful_flop:
            return loop.flop_per_warp
        return self.useful_flop * loop.tile_fraction / self.warps

    def duplication(self, loop: sass.LoopReport) -> float:
        """Tensor-core work issued over the work the tile needs (1.0: none repeated)."""
        return loop.flop_per_warp / self.useful_per_warp(loop)

    def figure(self, loop: sass.LoopReport) -> float:
        """Non-tensor-core instructions per kFLOP of the tile's useful tensor-core work."""
        return loop.other / (self.useful_per_warp(loop) / 1e3)

    @property
    def role(self) -> str:
        return ROLE.get(self.kernel, self.kernel)

    @property
    def best(self) -> Optional[sass.LoopReport]:
        return min(self.loops, key=self.figure) if self.loops else None

    @property
    def worst(self) -> Optional[sass.LoopReport]:
        return max(self.loops, key=self.figure) if self.loops else None

    @property
    def config_name(self) -> str:
        return _config_label(self.config)


# the autotune parameters a config is named by (block sizes, heads per program, sub-tile splits)
_LABEL_KEYS = ("BLOCK", "HEAD", "GROUP", "SPLIT", "MASKED", "BIAS_ADD")


def _config_label(config: dict) -> str:
    parts = [f"w{config.get('num_warps')}", f"s{config.get('num_stages')}"]
    parts += [f"{k.lower()}{int(v) if isinstance(v, bool) else v}" for k, v in sorted(config.items())
              if k.startswith(_LABEL_KEYS)]
    return "-".join(parts)


def _name(kernel: str, pass_name: str, case: Case, config: dict) -> str:
    return "-".join([kernel, pass_name, case.dtype, f"dh{case.head_dim}", case.pattern.name, _config_label(config)])


def useful_flop(role: str, rows: int, cols: int, dh: int, dv: int, heads: int = 1) -> float:
    """Tensor-core FLOP of one [rows, cols] tile for ``heads`` heads: forward S = q k^T and P v;
    dq adds dP = dO v^T and dS k; dk/dv: S^T, dP^T, P^T dO and dS^T q."""
    dims = {"fwd": dh + dv, "dq": dh + dv + dh, "dkdv": 2 * dh + 2 * dv}[role]
    return 2.0 * rows * cols * dims * heads


def _analyse(kernel, source: str, name: str, pass_name: str, config: dict, cubin_dir: Optional[str]) -> Variant:
    cubin = kernel.asm["cubin"]
    use = resource_usage(cubin)
    path = None
    if cubin_dir:
        os.makedirs(cubin_dir, exist_ok=True)
        path = os.path.join(cubin_dir, f"{name}.cubin")
        with open(path, "wb") as f:
            f.write(cubin)
    loops = sass.tensor_loops(sass.disassemble(cubin, _bin("nvdisasm")))
    return Variant(source, name.split("-")[0], pass_name, dict(config), use["registers"],
                   use["stack_bytes"] + use["local_bytes"], loops, path)


def _bucket(x, nb: int):
    """floor(log2(x)) clamped to nb, and -1 for x = 0, as the kernels bucket int32 |dt|
    (``triton_kernels._flo_abs``)."""
    import numpy as np

    b = np.minimum(np.floor(np.log2(np.maximum(x, 1).astype(np.float64))).astype(np.int64), nb)
    return np.where(np.asarray(x) == 0, -1, b)


def time_bucket_iterations(launch) -> Tuple[float, float]:
    """Mean trip count of the dq kernel's loop over a tile's time buckets, over the full and over
    the masked tiles of a captured pass-A launch: what the kernel computes per tile
    (``_bucket_range``: the buckets between the rows' and columns' extreme timestamps)."""
    import numpy as np

    a = {**dict(zip(launch.fn.arg_names, launch.args)), **launch.kwargs}
    kw = a
    if kw.get("PASS_B") or not kw.get("TIME_GRAD") or kw.get("TS_MODE") != 1 or kw.get("JROW"):
        return 1.0, 1.0
    block, nb = kw["BLOCK"], a["NB"]
    ts = a["TS"].cpu().numpy().astype(np.int64)
    offs, nt = a["OFFS"].cpu().numpy(), a["NT"].cpu().numpy()
    blk_seq, blk_start = a["BLK_SEQ"].cpu().numpy(), a["BLK_START"].cpu().numpy()
    kv_ptr, kv_idx, kv_full = a["KV_PTR"].cpu().numpy(), a["KV_IDX"].cpu().numpy(), a["KV_FULL"].cpu().numpy()
    ar = np.arange(block)
    full, masked = [], []
    for pid in range(len(blk_seq)):
        seq, start = blk_seq[pid], blk_start[pid]
        s0, L = offs[seq], offs[seq + 1] - offs[seq]
        n = L - nt[seq]
        i = start + ar
        ts_i = np.where(i < L, ts[np.minimum(s0 + i, len(ts) - 1)], 0)
        for e in range(kv_ptr[pid], kv_ptr[pid + 1]):
            j = (kv_idx[e] >> 1) * block + ar
            ts_j = np.where(j < n, ts[np.minimum(s0 + j, len(ts) - 1)], 0)
            d_max = max(ts_i.max() - ts_j.min(), ts_j.max() - ts_i.min())
            d_min = max(ts_i.min() - ts_j.max(), ts_j.min() - ts_i.max(), 0)
            trips = int(_bucket(d_max, nb) - _bucket(d_min, nb) + 1)
            (full if e < kv_ptr[pid] + kv_full[pid] else masked).append(trips)
    mean = lambda xs: float(np.mean(xs)) if xs else 1.0  # noqa: E731
    return mean(full), mean(masked)


def ours(case: Case, arch: int = 90, cubin_dir: Optional[str] = None, module=None,
         kernels: Optional[List[str]] = None) -> List[Variant]:
    """Every launch of ``case`` (each distinct kernel and pass once) at every autotune config."""
    from .compile_check import _compiled_module

    module = module if module is not None else _compiled_module()
    out, seen = [], set()
    for launch in capture_launches(case, module):
        if kernels and launch.kernel not in kernels:
            continue
        key = (launch.kernel, launch.pass_name)
        if key in seen:
            continue
        seen.add(key)
        for cfg in launch.configs:
            config = {**cfg.all_kwargs()}
            b = launch.bind(config)
            kernel = jit_compile(launch.fn, launch.args, b, arch)
            v = _analyse(kernel, "ours", _name(launch.kernel, launch.pass_name, case, config), launch.pass_name,
                         config, cubin_dir)
            if v.role in MATMULS_PER_PAIR:
                v.useful_flop = useful_flop(v.role, b["BLOCK"], b["BLOCK"], b["DH"], b["DV"], b["G"])
            if launch.kernel == "attn_bwd_dq" and v.loops:
                # the masked-tile loop comes first in the kernel, the full one second
                for loop, trips in zip(v.loops, reversed(time_bucket_iterations(launch))):
                    loop.inner_iterations = trips
            if launch.kernel == "attn_bwd_dkdv" and v.loops:
                # one query sub-tile an iteration (the full loop first, the masked one second)
                split = int(b.get("SPLIT", 1))
                subtiles = (split, split * int(b.get("MASKED_SPLIT", 1)))
                if len(v.loops) != 2 and subtiles != (1, 1):
                    raise RuntimeError(f"{v.cubin}: {len(v.loops)} tensor-core loops; dk/dv's sub-tile "
                                       "count per iteration needs its full and masked loop")
                for loop, n in zip(v.loops, subtiles):
                    loop.tile_fraction = 1.0 / n
            out.append(v)
    return out


def yardstick(arch: int = 90, cubin_dir: Optional[str] = None, head_dim: int = 64) -> List[Variant]:
    """The FlashAttention-2 yardstick's three kernels at every configuration of its space."""
    from . import flash_yardstick as fy

    out = []
    case = Case(dtype="bf16", head_dim=head_dim, value_dim=head_dim)
    for role, fn, args, kw, configs in fy.launches(dh=head_dim):
        for cfg in configs:
            kernel = jit_compile(fn, args, {**kw, **cfg}, arch)
            name = _name(fn.__name__, "-", case, cfg)
            v = _analyse(kernel, "yardstick", name, "-", cfg, cubin_dir)
            v.useful_flop = useful_flop(v.role, cfg["BLOCK_M"], cfg["BLOCK_N"], head_dim, head_dim)
            out.append(v)
    return out


def best_variants(variants: List[Variant]) -> Dict[str, Variant]:
    """Per role (fwd, dq, dkdv), the spill-free variant with the lowest non-tensor-core
    instructions per kFLOP in its steady-state loop (spilling variants only if nothing else)."""
    best: Dict[str, Variant] = {}
    for v in variants:
        if v.best is None or v.pass_name == "B":
            continue
        cur = best.get(v.role)
        key = (v.stack_bytes > 0, v.figure(v.best))
        if cur is None or key < (cur.stack_bytes > 0, cur.figure(cur.best)):
            best[v.role] = v
    return best


def figures(best: Dict[str, Variant]) -> Dict[str, float]:
    """forward and backward non-tensor-core instructions per tensor-core kFLOP."""
    out = {}
    if "fwd" in best:
        out["forward"] = best["fwd"].figure(best["fwd"].best)
    if "dq" in best and "dkdv" in best:
        w_dq, w_kv = MATMULS_PER_PAIR["dq"], MATMULS_PER_PAIR["dkdv"]
        dq, kv = best["dq"], best["dkdv"]
        out["backward"] = (w_dq * dq.figure(dq.best) + w_kv * kv.figure(kv.best)) / (w_dq + w_kv)
    return out


def report(case: Case, arch: int = 90, cubin_dir: Optional[str] = None, module=None) -> dict:
    mine = ours(case, arch, cubin_dir, module)
    yard = yardstick(arch, cubin_dir, case.head_dim)
    b_ours, b_yard = best_variants(mine), best_variants(yard)
    f_ours, f_yard = figures(b_ours), figures(b_yard)
    summary = {}
    for what in ("forward", "backward"):
        if what in f_ours and what in f_yard:
            ratio = f_ours[what] / f_yard[what]
            summary[what] = {"ours": f_ours[what], "yardstick": f_yard[what], "ratio": ratio,
                             "target": TARGETS[what], "meets": ratio <= TARGETS[what]}
    spilling = [f"{v.kernel}/{v.pass_name}/{v.config_name}" for v in mine if v.stack_bytes > 0]
    return {"case": case, "ours": mine, "yardstick": yard, "best_ours": b_ours, "best_yardstick": b_yard,
            "summary": summary, "spilling_configs": spilling}


CLASS_COLUMNS = ("fp32", "int", "mufu", "global", "shared", "atomic", "spill", "sync", "move", "control", "other")


def format_report(rep: dict) -> str:
    c = rep["case"]
    lines = [f"Hot loops, sm_90, JIT-specialised: {c.dtype}, dh={c.head_dim}, H={c.heads}, pattern {c.pattern.name}, "
             f"lengths {list(c.lengths)}, targets {list(c.targets)}"
             f"{'' if c.ts_in_order else ', behaviors out of time order'}; per warp and loop iteration.", "",
             "| source | kernel | pass | config | regs | stack B | loop | instr | TC | " + " | ".join(CLASS_COLUMNS)
             + " | non-TC per issued TC kFLOP | TC issued / needed | non-TC per needed kFLOP |",
             "|---|---|---|---|---:|---:|---|---:|---:|" + "---:|" * len(CLASS_COLUMNS) + "---:|---:|---:|"]
    for v in rep["ours"] + rep["yardstick"]:
        for loop in v.loops:
            nested = "".join(f" (+{n} x {loop.inner_iterations:.1f} inner iterations)" if t == 0 else f" (+inner {n})"
                             for _, n, t in loop.nested)
            cls = " | ".join(str(loop.classes.get(k, 0)) for k in CLASS_COLUMNS)
            lines.append(f"| {v.source} | {v.kernel} | {v.pass_name} | {v.config_name} | {v.registers} | "
                         f"{v.stack_bytes} | {loop.label}{nested} | {loop.instructions} | {loop.tensor} | {cls} | "
                         f"{loop.other_per_kflop:.2f} | {v.duplication(loop):.2f} | {v.figure(loop):.2f} |")
    lines += ["", "| figure | ours | yardstick | ratio | target |", "|---|---:|---:|---:|---:|"]
    for what, s in rep["summary"].items():
        lines.append(f"| {what} | {s['ours']:.2f} | {s['yardstick']:.2f} | **{s['ratio']:.2f}x** | "
                     f"<= {s['target']:.1f}x ({'met' if s['meets'] else 'not met'}) |")
    for role in ("fwd", "dq", "dkdv"):
        if role in rep["best_ours"]:
            v = rep["best_ours"][role]
            w = v.worst
            lines.append(f"\nbest {role} config: {v.kernel}/{v.config_name}, steady-state loop "
                         f"{v.figure(v.best):.2f}/kFLOP, masked loop {v.figure(w):.2f}/kFLOP, "
                         f"tensor-core work issued {v.duplication(v.best):.2f}x what the tile needs, "
                         f"{v.registers} registers, {v.stack_bytes} B stack")
    sp = rep["spilling_configs"]
    lines.append(f"\nconfigs with local-memory spills: {', '.join(sp) if sp else 'none'}")
    return "\n".join(lines)
