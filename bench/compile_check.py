"""Compile the Triton kernels for a GPU architecture ahead of time, on a machine without a GPU.

The interpreter checks what the kernels compute, not whether they compile for a real card, nor
how many registers they need. This module does that part without a GPU:

1. it runs a real call of the op (forward and backward) on CPU tensors with ``interpret=False``
   and a recording stand-in for the kernels module, so it captures exactly the launches a CUDA
   call with the same inputs makes (dtypes, block sizes, constexpr flags, both passes);
2. it compiles each launch with ``triton.compile`` for the target (default ``sm_90``, Hopper) and
   each autotune configuration, down to a cubin through the ``ptxas`` shipped with triton;
3. it reads the cubin's resource usage (registers per thread, stack bytes = local memory,
   i.e. spills when non-zero) with the bundled ``cuobjdump``, and the shared memory from the
   kernel metadata.

    python -m bench.compile_check                       # bf16/fp16/fp32, dh=64, dense + sparse
    python -m bench.compile_check --dtypes bf16 --head-dims 64 128 --json usage.json
    python -m bench.compile_check --hot-loop --cubin-dir cubins/   # the hot-loop report (bench/hot_loop.py)

Each variant is compiled with the argument specialisation a JIT launch on a GPU applies (the
launcher's own binder: integers divisible by 16 or equal to 1, 16-byte aligned pointers), so its
cubin is the one a GPU run would load. ``--cubin-dir`` keeps them as
``<kernel>-<pass>-<dtype>-dh<dh>-<pattern>-w<warps>-s<stages>.cubin``.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from suan_kernels.ops.unified_attention import DENSE, AttentionCall, AttentionPattern
from suan_kernels.ops.unified_attention.launch import _Run, fresh_kernel_module

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
_TRITON_TYPES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16", torch.float64: "fp64",
                 torch.int64: "i64", torch.int32: "i32", torch.int16: "i16", torch.int8: "i8", torch.uint8: "u8",
                 torch.bool: "i1"}


@dataclass
class Case:
    """One call of the op: dtype, head dims, heads, sequence lengths / targets and the pattern."""

    dtype: str = "bf16"
    head_dim: int = 64
    value_dim: int = 64
    heads: int = 4
    lengths: Sequence[int] = (300, 70, 1)
    targets: Sequence[int] = (3, 0, 1)
    pattern: AttentionPattern = DENSE
    ts_float: bool = False  # float64 timestamps (the kernels' TS_MODE 2 path) instead of integers
    # False: each sequence's behavior timestamps shuffled (the kernels' TS_SORTED path off)
    ts_in_order: bool = True


@dataclass
class Launch:
    kernel: str
    autotuner: object  # triton's Autotuner, or the JITFunction itself for a kernel without configs
    args: tuple
    kwargs: dict

    @property
    def pass_name(self) -> str:
        return "B" if self.kwargs.get("PASS_B") else "A"

    @property
    def fn(self):
        """The JITFunction under the autotuner and heuristics wrappers."""
        fn = self.autotuner
        while not hasattr(fn, "arg_names") or hasattr(fn, "values") or hasattr(fn, "configs"):
            fn = fn.fn
        return fn

    @property
    def configs(self) -> list:
        import triton
        from triton.runtime.autotuner import Autotuner

        if isinstance(self.autotuner, Autotuner):
            configs = self.autotuner.configs
            if self.autotuner.early_config_prune:  # what the autotuner would try for these arguments
                configs = self.autotuner.early_config_prune(configs, {**dict(zip(self.fn.arg_names, self.args)),
                                                                      **self.kwargs})
            return configs
        return [triton.Config({}, num_warps=4, num_stages=2)]

    def bind(self, config: Optional[dict] = None) -> dict:
        """The keyword arguments a launch with ``config`` (default: the first) passes to the
        JITFunction: the call's, the config's, then each ``triton.heuristics`` value."""
        from triton.runtime.autotuner import Heuristics

        kwargs = {**self.kwargs, **(config if config is not None else self.configs[0].all_kwargs())}
        names = self.fn.arg_names
        wrappers, fn = [], self.autotuner
        while fn is not self.fn:
            wrappers.append(fn)
            fn = fn.fn
        for w in reversed(wrappers):  # innermost heuristics first, as triton applies them
            if isinstance(w, Heuristics):
                for name, rule in w.values.items():
                    kwargs[name] = rule({**dict(zip(names, self.args)), **kwargs})
        return kwargs


@dataclass
class Usage:
    kernel: str
    pass_name: str
    dtype: str
    head_dim: int
    value_dim: int
    pattern: str
    num_warps: int
    num_stages: int
    registers: int
    stack_bytes: int
    shared_bytes: int
    compile_s: float
    extra: Dict[str, object] = field(default_factory=dict)


def _compiled_module():
    """A copy of the kernels built for compilation (never the interpreter)."""
    return fresh_kernel_module(False)


class _Recorder:
    """Stands in for the kernels module: ``mod.attn_fwd[grid](*args, **kwargs)`` records the launch."""

    def __init__(self, real):
        self.real = real
        self.launches: List[Launch] = []

    def __getattr__(self, name):
        autotuner = getattr(self.real, name)
        recorder = self

        class _Grid:
            def __getitem__(self, grid):
                def launch(*args, **kwargs):
                    recorder.launches.append(Launch(name, autotuner, args, kwargs))
                return launch

        return _Grid()


def _targets_at_request_time(ts: torch.Tensor, offsets: torch.Tensor, num_targets: torch.Tensor) -> torch.Tensor:
    ts = ts.clone()
    for b in range(num_targets.numel()):
        lo, hi, k = int(offsets[b]), int(offsets[b + 1]), int(num_targets[b])
        if k and hi - lo > k:
            ts[hi - k:hi] = ts[hi - k - 1] + 60
    return ts


def capture_launches(case: Case, module=None) -> List[Launch]:
    """The launches (forward, then backward) that a CUDA call of ``case`` makes."""
    dtype = DTYPES[case.dtype]
    g = torch.Generator().manual_seed(0)
    T = sum(case.lengths)
    q = torch.randn(T, case.heads, case.head_dim, generator=g).to(dtype)
    k = torch.randn(T, case.heads, case.head_dim, generator=g).to(dtype)
    v = torch.randn(T, case.heads, case.value_dim, generator=g).to(dtype)
    offsets = torch.tensor([0] + list(case.lengths), dtype=torch.int64).cumsum(0)
    num_targets = torch.tensor(list(case.targets), dtype=torch.int64)
    # what the models pass: chronological timestamps in seconds (gaps of an hour on average; the
    # targets share the request's time), a position table as long as the longest sequence (SUAN's
    # max_len + 1: no clamp), 64 time buckets
    gaps = torch.empty(T, dtype=torch.float64).exponential_(1 / 3600.0, generator=g).round().to(torch.int64)
    ts = torch.cat([1_700_000_000 + gaps[int(a):int(b)].cumsum(0) for a, b in zip(offsets[:-1], offsets[1:])])
    ts = _targets_at_request_time(ts, offsets, num_targets)
    if not case.ts_in_order:
        for b in range(len(case.lengths)):
            lo, n = int(offsets[b]), case.lengths[b] - case.targets[b]
            ts[lo:lo + n] = ts[lo:lo + n][torch.randperm(n, generator=g)]
    if case.ts_float:
        ts = ts.to(torch.float64) + torch.rand(T, generator=g, dtype=torch.float64)
    P = max(case.lengths) + 1
    w_pos = torch.randn(2 * P - 1, generator=g)
    w_time = torch.randn(65, generator=g)
    call = AttentionCall(q, k, v, offsets, ts, num_targets, w_pos, w_time, 64, case.pattern)
    run = _Run(call, interpret=False)
    rec = _Recorder(module if module is not None else _compiled_module())
    run.mod = rec
    out, lse = run.forward()
    run.backward(torch.randn_like(out.float()).to(dtype), torch.randn_like(out.float()).to(dtype),
                 torch.zeros_like(lse), True, True)
    return rec.launches


def signature_of(jit_fn, args: tuple, kwargs: dict) -> Tuple[Dict[str, str], Dict[str, object]]:
    """Triton signature (``{"Q": "*bf16", "T": "i32", "BLOCK": "constexpr", ...}``) and constexprs."""
    values = dict(zip(jit_fn.arg_names, args))
    values.update(kwargs)
    sig, consts = {}, {}
    for param in jit_fn.params:
        name = param.name
        if name not in values:
            raise ValueError(f"{jit_fn.__name__}: launch does not pass {name}")
        val = values[name]
        if param.is_constexpr:
            sig[name] = "constexpr"
            consts[name] = val
        elif isinstance(val, torch.Tensor):
            sig[name] = "*" + _TRITON_TYPES[val.dtype]
        elif isinstance(val, bool):
            sig[name] = "i1"
        elif isinstance(val, int):
            sig[name] = "i32" if -2**31 <= val < 2**31 else "i64"
        elif isinstance(val, float):
            sig[name] = "fp32"
        else:
            raise ValueError(f"{jit_fn.__name__}: cannot type argument {name}={val!r}")
    return sig, consts


def _bin(name: str) -> str:
    import triton.backends.nvidia as nv

    path = os.path.join(os.path.dirname(nv.__file__), "bin", name)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: this triton wheel ships no {name}")
    return path


def resource_usage(cubin: bytes) -> Dict[str, int]:
    """Registers per thread and stack (local memory) bytes of the cubin's kernel, by cuobjdump."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "k.cubin")
        with open(path, "wb") as f:
            f.write(cubin)
        text = subprocess.run([_bin("cuobjdump"), "-res-usage", path], capture_output=True, text=True,
                              check=True).stdout
    m = re.search(r"REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)", text)
    if m is None:
        raise RuntimeError(f"cuobjdump printed no resource usage:\n{text}")
    return {"registers": int(m.group(1)), "stack_bytes": int(m.group(2)), "static_shared_bytes": int(m.group(3)),
            "local_bytes": int(m.group(4))}


def jit_compile(jit_fn, args: tuple, kwargs: dict, arch: int = 90):
    """Compile ``jit_fn`` for ``sm_<arch>`` exactly as a JIT launch with these arguments would:
    triton's own binder specialises them (integers divisible by 16 or equal to 1, pointers
    aligned to 16 bytes, constexprs) and its options come from the same keyword arguments."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, make_backend
    from triton.runtime.jit import create_function_from_signature

    target = GPUTarget("cuda", arch, 32)
    backend = make_backend(target)
    binder = create_function_from_signature(jit_fn.signature, jit_fn.params, backend)
    kwargs = dict(kwargs)
    kwargs.setdefault("enable_fp_fusion", True)  # triton 3.9's JIT default, said explicitly (no warning)
    bound_args, specialization, options = binder(*args, **kwargs)
    options, signature, constexprs, attrs = jit_fn._pack_args(backend, kwargs, bound_args, specialization, options)
    return triton.compile(ASTSource(jit_fn, signature, constexprs, attrs), target=target, options=options.__dict__)


def compile_launch(launch: Launch, arch: int = 90, configs: Optional[list] = None):
    """Compile one captured launch for ``sm_<arch>`` with each autotune config, specialised as a
    JIT launch on a GPU would be; yields ``(config, compiled kernel, seconds)``."""
    jit_fn = launch.fn
    for cfg in configs if configs is not None else launch.configs:
        t0 = time.perf_counter()
        kernel = jit_compile(jit_fn, launch.args, launch.bind(cfg.all_kwargs()), arch)
        yield cfg, kernel, time.perf_counter() - t0


def check_case(case: Case, arch: int = 90, all_configs: bool = True, module=None,
               cubin_dir: Optional[str] = None) -> List[Usage]:
    """Capture the launches of ``case`` and compile each (every autotune config, or the first)."""
    module = module if module is not None else _compiled_module()
    rows = []
    seen = set()
    for launch in capture_launches(case, module):
        sig, consts = signature_of(launch.fn, launch.args, launch.bind())
        key = (launch.kernel, tuple(sorted(sig.items())), tuple(sorted(consts.items())))
        if key in seen:
            continue
        seen.add(key)
        configs = launch.configs if all_configs else launch.configs[:1]
        for cfg, kernel, secs in compile_launch(launch, arch, configs):
            use = resource_usage(kernel.asm["cubin"])
            if cubin_dir:
                os.makedirs(cubin_dir, exist_ok=True)
                name = (f"{launch.kernel}-{launch.pass_name}-{case.dtype}-dh{case.head_dim}-{case.pattern.name}-"
                        f"w{cfg.num_warps}-s{cfg.num_stages}")
                if "GROUP_COLS" in cfg.kwargs:  # two configs may differ only in the head group
                    name += f"-g{launch.bind(cfg.all_kwargs())['G']}"
                for key in ("SPLIT", "MASKED_SPLIT", "BIAS_ADD"):  # or in how a block is cut, how the bias added
                    if key in cfg.kwargs:
                        name += f"-{key.lower()}{int(cfg.kwargs[key])}"
                with open(os.path.join(cubin_dir, name + ".cubin"), "wb") as f:
                    f.write(kernel.asm["cubin"])
                if os.environ.get("SUAN_KEEP_TTGIR"):  # the layouts the compiler chose (debugging)
                    with open(os.path.join(cubin_dir, name + ".ttgir"), "w") as f:
                        f.write(kernel.asm.get("ttgir", ""))
            rows.append(Usage(launch.kernel, launch.pass_name, case.dtype, case.head_dim, case.value_dim, case.pattern.name,
                              cfg.num_warps, cfg.num_stages, use["registers"], use["stack_bytes"] + use["local_bytes"],
                              kernel.metadata.shared, secs,
                              {"G": launch.bind(cfg.all_kwargs()).get("G", 1),
                               "bias_add": bool(cfg.kwargs.get("BIAS_ADD"))}))
    return rows


def default_cases(dtypes: Sequence[str] = ("bf16", "fp16", "fp32"), head_dims: Sequence[int] = (64,)) -> List[Case]:
    cases = []
    for dt in dtypes:
        for dh in head_dims:
            cases.append(Case(dtype=dt, head_dim=dh, value_dim=dh))
            cases.append(Case(dtype=dt, head_dim=dh, value_dim=dh, pattern=AttentionPattern(32, 4, 2)))
    return cases


def format_table(rows: List[Usage]) -> str:
    lines = ["| kernel | pass | dtype | dh/dv | pattern | warps | stages | heads/program | regs | stack B | shared B "
             "| compile s |",
             "|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r.kernel} | {r.pass_name} | {r.dtype} | {r.head_dim}/{r.value_dim} | {r.pattern} | "
                     f"{r.num_warps} | {r.num_stages} | {r.extra.get('G', 1)}"
                     f"{' (bias added)' if r.extra.get('bias_add') else ''} | {r.registers} | {r.stack_bytes} | "
                     f"{r.shared_bytes} | "
                     f"{r.compile_s:.1f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", type=int, default=90, help="compute capability x 10 (90 = H100/H200)")
    p.add_argument("--dtypes", nargs="+", default=["bf16", "fp16", "fp32"], choices=sorted(DTYPES))
    p.add_argument("--head-dims", nargs="+", type=int, default=[64])
    p.add_argument("--first-config", action="store_true", help="only the first autotune configuration")
    p.add_argument("--json", default=None, help="also write the rows to this JSON file")
    p.add_argument("--cubin-dir", default=None, help="write every compiled variant's cubin here")
    p.add_argument("--hot-loop", action="store_true",
                   help="the hot-loop report (bf16, dh=64, H=4, dense, both bias tables) against FlashAttention-2")
    p.add_argument("--lengths", type=int, nargs="+", default=None, help="sequence lengths of the hot-loop case")
    p.add_argument("--out-of-order", action="store_true",
                   help="hot-loop case with each sequence's behaviors out of time order (no TS_SORTED path)")
    a = p.parse_args(argv)
    module = _compiled_module()
    if a.hot_loop:
        from . import hot_loop

        lengths = tuple(a.lengths or (2048, 2048))
        case = Case(dtype=a.dtypes[0] if len(a.dtypes) == 1 else "bf16", head_dim=a.head_dims[0],
                    value_dim=a.head_dims[0], heads=4, lengths=lengths, targets=tuple(1 for _ in lengths),
                    ts_in_order=not a.out_of_order)
        rep = hot_loop.report(case, a.arch, a.cubin_dir, module)
        print(hot_loop.format_report(rep))
        if a.json:
            with open(a.json, "w") as f:
                json.dump({"summary": rep["summary"], "spilling_configs": rep["spilling_configs"],
                           "variants": [dict(source=v.source, kernel=v.kernel, pass_name=v.pass_name,
                                             config=v.config_name, registers=v.registers, stack_bytes=v.stack_bytes,
                                             loops=[dict(label=r.label, instructions=r.instructions, tensor=r.tensor,
                                                         classes=r.classes, nested=r.nested,
                                                         other_per_kflop=r.other_per_kflop,
                                                         tc_issued_over_needed=v.duplication(r),
                                                         other_per_needed_kflop=v.figure(r)) for r in v.loops],
                                             useful_flop=v.useful_flop)
                                        for v in rep["ours"] + rep["yardstick"]]}, f, indent=2)
        return 0
    rows = []
    for i, case in enumerate(default_cases(a.dtypes, a.head_dims)):
        case_rows = check_case(case, a.arch, not a.first_config, module, a.cubin_dir)
        table = format_table(case_rows).splitlines()
        print("\n".join(table if i == 0 else table[2:]), flush=True)  # one header, rows as they compile
        rows += case_rows
    spilled = [r for r in rows if r.stack_bytes > 0]
    print(f"\n{len(rows)} variants compiled for sm_{a.arch}; {len(spilled)} use local memory (stack > 0: spills)")
    if a.json:
        with open(a.json, "w") as f:
            json.dump([r.__dict__ for r in rows], f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
