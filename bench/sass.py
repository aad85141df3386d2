"""Read a cubin's SASS (``nvdisasm`` from the triton wheel): instructions, loops, classes.

The static proxy of kernel speed the project uses without a GPU (``bench/compile_check.py
--hot-loop``): for each loop that holds tensor-core instructions, how many other instructions a
warp issues per iteration, by class, and per kFLOP of the loop's tensor-core work.

* A loop is a backward branch: the instructions from its target label to the branch. Loops
  nested in a tensor-core loop are counted with it: once, or, for an inner loop without
  tensor-core work whose trip count depends on the data, as often as it runs on average
  (``LoopReport.inner_iterations``, set by the caller from the case's data).
* Tensor-core work: ``HGMMA.MxNxK`` is issued by a warpgroup of four warps, each warp's share
  2*M*N*K/4 FLOP; ``HMMA.MNK`` (``mma.sync``, e.g. 16816) is per warp, 2*M*N*K FLOP.
"""
from __future__ import annotations

import os
import re
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

_INSTR = re.compile(r"^\s*/\*([0-9a-f]+)\*/\s+(.*?)\s*;")
_LABEL = re.compile(r"^(\.L_x_\d+):")
_TARGET = re.compile(r"`\((\.L_x_\d+)\)")
_GUARD = re.compile(r"^@!?U?P[T0-9]+\s+")

# opcode (before the first dot) -> class
CLASSES = {
    "tensor": ("HGMMA", "HMMA", "IMMA", "QGMMA", "IGMMA"),
    "fp32": ("FADD", "FMUL", "FFMA", "FMNMX", "FSEL", "FSETP", "FSET", "FCHK", "FRND", "FMUL2", "FADD2", "FFMA2",
             "F2F", "F2FP", "HADD2", "HMUL2", "HFMA2", "HMNMX2", "HSETP2", "DADD", "DMUL", "DFMA", "DSETP"),
    "int": ("IADD3", "IADD", "IMAD", "IMUL", "LOP3", "LOP", "SHF", "SHL", "SHR", "IMNMX", "ISETP", "SEL", "LEA",
            "PRMT", "IABS", "I2F", "F2I", "I2I", "POPC", "FLO", "BMSK", "SGXT", "BREV", "VIADD", "VIMNMX", "IDP",
            "ICMP", "PLOP3", "P2R", "R2P", "I2FP", "F2IP", "VIADDMNMX", "IMNMX3", "ISCADD", "IADD32I"),
    "mufu": ("MUFU",),
    "global": ("LDG", "STG", "LDGSTS", "LDGDEPBAR", "UBLKCP", "UTMALDG", "UTMASTG", "UTMAPF", "LD", "ST"),
    "shared": ("LDS", "STS", "LDSM", "STSM", "LDSMT"),
    "atomic": ("ATOM", "ATOMG", "RED", "ATOMS", "REDG", "REDUX"),
    "spill": ("LDL", "STL"),
    "sync": ("BAR", "WARPSYNC", "DEPBAR", "MEMBAR", "WARPGROUP", "SYNCS", "ARRIVES", "ERRBAR", "CCTL", "FENCE",
             "BSYNC", "BSSY", "NANOSLEEP", "YIELD"),
    "move": ("MOV", "UMOV", "S2R", "CS2R", "S2UR", "R2UR", "SHFL", "UIADD3", "ULOP3", "USHF", "UIMAD", "ULEA", "USEL",
             "UISETP", "UPRMT", "UFLO", "UPOPC", "ULDC", "LDC", "MOV32I", "VOTE", "VOTEU", "MATCH", "UMNMX", "IMAD.MOV"),
    "control": ("BRA", "BRX", "JMP", "CALL", "RET", "EXIT", "NOP", "BPT", "KILL", "WARPSYNC"),
}
_CLASS_OF = {op: cls for cls, ops in CLASSES.items() for op in ops}


def opcode(text: str) -> str:
    """``@P0 HGMMA.64x64x16.F32.BF16 R24, ...`` -> ``HGMMA.64x64x16.F32.BF16``."""
    return _GUARD.sub("", text).split()[0]


def classify(op: str) -> str:
    base = op.split(".")[0]
    if op.startswith("IMAD.MOV"):
        return "move"
    return _CLASS_OF.get(base, "other")


def tc_flop_per_warp(op: str) -> float:
    """FLOP of one tensor-core instruction, per issuing warp (0 for others)."""
    base, *mods = op.split(".")
    if base in ("HGMMA", "QGMMA", "IGMMA") and mods:
        m = re.match(r"(\d+)x(\d+)x(\d+)", mods[0])
        if m:
            M, N, K = (int(x) for x in m.groups())
            return 2.0 * M * N * K / 4.0  # a warpgroup's instruction: each of its 4 warps issues it
    if base in ("HMMA", "IMMA") and mods:
        m = re.match(r"(\d{2})(\d)(\d{1,2})$", mods[0])
        if m:
            M, N, K = (int(x) for x in m.groups())
            return 2.0 * M * N * K
    return 0.0


@dataclass
class Instr:
    index: int
    address: int
    text: str
    op: str
    cls: str
    flop: float
    target: Optional[str] = None


@dataclass
class Loop:
    """Instructions ``[start, end]`` (indices into the kernel's instruction list)."""

    start: int
    end: int
    label: str
    children: List["Loop"] = field(default_factory=list)

    def contains(self, other: "Loop") -> bool:
        return self.start <= other.start and other.end <= self.end and (self.start, self.end) != (other.start,
                                                                                                   other.end)


@dataclass
class LoopReport:
    label: str
    instructions: int
    tensor: int
    flop_per_warp: float
    classes: Dict[str, int]
    nested: List[Tuple[str, int, int]]  # (label, instructions, tensor-core ones) of inner loops
    # mean iterations of the inner loops without tensor-core work per iteration of this loop
    # (e.g. the dq kernel's loop over a tile's time buckets); their body is counted that often
    inner_iterations: float = 1.0
    # the part of a [BLOCK, BLOCK] tile one iteration covers (a loop over sub-tiles: 1 / their count)
    tile_fraction: float = 1.0

    @property
    def inner_other(self) -> float:
        """Non-tensor-core instructions of one pass through the inner loops without tensor cores."""
        return float(sum(n - t for _, n, t in self.nested if t == 0))

    @property
    def other(self) -> float:
        return self.instructions - self.tensor + (self.inner_iterations - 1.0) * self.inner_other

    @property
    def other_per_kflop(self) -> float:
        return self.other / (self.flop_per_warp / 1e3) if self.flop_per_warp else float("inf")


def disassemble(cubin: bytes, nvdisasm: str) -> str:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "k.cubin")
        with open(path, "wb") as f:
            f.write(cubin)
        return subprocess.run([nvdisasm, "-c", path], capture_output=True, text=True, check=True).stdout


def parse(sass: str) -> Tuple[List[Instr], Dict[str, int]]:
    """Instructions in order and label -> index of the instruction that follows it."""
    instrs: List[Instr] = []
    labels: Dict[str, int] = {}
    for line in sass.splitlines():
        m = _LABEL.match(line.strip())
        if m:
            labels[m.group(1)] = len(instrs)
            continue
        m = _INSTR.match(line)
        if not m:
            continue
        text = m.group(2)
        op = opcode(text)
        t = _TARGET.search(text)
        instrs.append(Instr(len(instrs), int(m.group(1), 16), text, op, classify(op), tc_flop_per_warp(op),
                            t.group(1) if t and op.split(".")[0] in ("BRA", "BRX", "JMP") else None))
    return instrs, labels


def find_loops(instrs: List[Instr], labels: Dict[str, int]) -> List[Loop]:
    """Backward branches as loops, nested into a tree (outermost first)."""
    loops = []
    for ins in instrs:
        if ins.target is not None and ins.target in labels and labels[ins.target] <= ins.index:
            loops.append(Loop(labels[ins.target], ins.index, ins.target))
    # one loop per label: the farthest backward branch to it
    by_label: Dict[str, Loop] = {}
    for lp in loops:
        if lp.label not in by_label or lp.end > by_label[lp.label].end:
            by_label[lp.label] = lp
    loops = sorted(by_label.values(), key=lambda lp: (lp.start, -lp.end))
    roots: List[Loop] = []
    stack: List[Loop] = []
    for lp in loops:
        while stack and not stack[-1].contains(lp):
            stack.pop()
        (stack[-1].children if stack else roots).append(lp)
        stack.append(lp)
    return roots


def _report(loop: Loop, instrs: List[Instr]) -> LoopReport:
    body = instrs[loop.start:loop.end + 1]
    classes = Counter(i.cls for i in body)
    nested = []

    def walk(lp):
        for ch in lp.children:
            tc = sum(1 for i in instrs[ch.start:ch.end + 1] if i.cls == "tensor")
            nested.append((ch.label, ch.end - ch.start + 1, tc))
            walk(ch)

    walk(loop)
    return LoopReport(loop.label, len(body), classes.get("tensor", 0), sum(i.flop for i in body),
                      dict(sorted(classes.items())), nested)


def tensor_loops(sass: str) -> List[LoopReport]:
    """Reports of the outermost loops that hold tensor-core instructions (inner loops counted
    with them), in program order."""
    instrs, labels = parse(sass)
    out = []

    def visit(lp: Loop):
        body = instrs[lp.start:lp.end + 1]
        if any(i.cls == "tensor" for i in body):
            out.append(_report(lp, instrs))
        else:
            for ch in lp.children:
                visit(ch)

    for root in find_loops(instrs, labels):
        visit(root)
    return out
