#!/usr/bin/env bash
# One prepared GPU check for a lent H200, in stages that each have their own time cap (a stage
# that hangs or fails costs its cap, not the run):
#   0. environment and the card's two ceilings (bf16 matmul TFLOP/s, device copy GB/s)
#   1. a smoke parity test (the fused op against the reference, dense, L=1024, B=64)
#   2. the dense benchmarks: fused kernels vs eager reference, SDPA + bias mask, FlexAttention
#      (same score/mask functions) and FlashAttention-2 (SDPA flash, causal, no bias: the speed
#      of light of the shape), forward and forward+backward
#   3. the block-sparse benchmarks (dense vs windows 32 and 128)
#   4. the CUDA parity tests (compiled kernels: generated cases, realistic sizes, bias grads)
#   5. the model benchmarks, with what time is left
# Installs nothing: it runs with the machine's python3, torch, triton, pytest, pytest-benchmark,
# hypothesis, pytest-xdist. Writes at most 8 files under OUT (the device tool's limit), prints a
# short summary last.
#
#   bash bench/gpu_check.sh OUT_DIR [TOTAL_SECONDS]        (default 430 s)
set -u
OUT=${1:-gpu_check_out}
TOTAL=${2:-430}
mkdir -p "$OUT"
# the kernels' folder under its import name suan_kernels, without installing anything
PKGS=$(mktemp -d) && ln -sfn "$(pwd)/kernels" "$PKGS/suan_kernels"
export PYTHONPATH="$PKGS:$(pwd)${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
t0=$(date +%s)
left() { echo $(( TOTAL - ($(date +%s) - t0) )); }
cap() { local want=$1 l; l=$(left); [ "$l" -lt "$want" ] && want=$l; [ "$want" -lt 1 ] && want=1; echo "$want"; }
LOG="$OUT/log.txt"
: > "$LOG"
stage() { echo "== $1 ($(( $(date +%s) - t0 )) s) ==" | tee -a "$LOG"; }

stage "environment and ceilings"
timeout 60 $PY - 2>&1 <<'PYEOF' | tee -a "$LOG"
import datetime, platform, subprocess, torch, triton
print("date", datetime.datetime.now().isoformat())
print("gpu", torch.cuda.get_device_name(0), torch.cuda.get_device_capability(0),
      torch.cuda.get_device_properties(0).multi_processor_count, "SMs")
print("torch", torch.__version__, "cuda", torch.version.cuda, "triton", triton.__version__, "python", platform.python_version())
print(subprocess.run(["nvidia-smi", "--query-gpu=driver_version,clocks.sm,clocks.max.sm,power.limit,temperature.gpu",
                      "--format=csv"], capture_output=True, text=True).stdout.strip())
from triton.testing import do_bench
g = torch.Generator(device="cuda").manual_seed(0)
a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16, generator=g)
b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16, generator=g)
ms = do_bench(lambda: a @ b, warmup=100, rep=300, return_mode="median")
print(f"ceiling: bf16 matmul 8192^3 {2 * 8192 ** 3 / ms / 1e9:.0f} TFLOP/s (random data, median)")
x = torch.randn(2 ** 30, device="cuda", dtype=torch.float32, generator=g)
y = torch.empty_like(x)
ms = do_bench(lambda: y.copy_(x), warmup=50, rep=200, return_mode="median")
print(f"ceiling: device copy 4 GiB -> 4 GiB {2 * x.numel() * 4 / ms / 1e6:.0f} GB/s (read + write)")
PYEOF

stage "smoke parity (dense, L=1024, B=64, bf16)"
timeout "$(cap 90)" $PY -m pytest tests/ops/test_cuda_realistic.py -q -x -p no:cacheprovider \
    -k "test_realistic_bf16_parity and 1024 and dense" 2>&1 | tail -3 | tee -a "$LOG"

stage "dense benchmarks"
SUAN_BENCH_LENGTHS=${SUAN_BENCH_LENGTHS:-1024,2048,4096,8192} SUAN_BENCH_MAX_TIME=${SUAN_BENCH_MAX_TIME:-0.1} \
  timeout "$(cap 210)" $PY -m pytest bench/test_attention.py --benchmark-only -q -p no:cacheprovider \
    -k "test_forward and not (flex and (2048 or 8192))" --benchmark-json="$OUT/bench_dense.json" \
    --benchmark-columns=median,rounds > "$OUT/bench_dense.log" 2>&1
echo "dense bench exit $? ($(tail -1 "$OUT/bench_dense.log"))" | tee -a "$LOG"

stage "sparse benchmarks"
SUAN_BENCH_LENGTHS=1024,4096 SUAN_BENCH_MAX_TIME=0.1 timeout "$(cap 70)" $PY -m pytest bench/test_attention.py \
    --benchmark-only -q -p no:cacheprovider -k "sparse" --benchmark-json="$OUT/bench_sparse.json" \
    --benchmark-columns=median,rounds > "$OUT/bench_sparse.log" 2>&1
echo "sparse bench exit $? ($(tail -1 "$OUT/bench_sparse.log"))" | tee -a "$LOG"

stage "CUDA parity"
timeout "$(cap 150)" $PY -m pytest tests/ops -q -p no:cacheprovider -n 8 --timeout 120 \
    -k "cuda or realistic or lists_hold or mix" > "$OUT/parity.log" 2>&1
echo "parity exit $? ($(tail -1 "$OUT/parity.log"))" | tee -a "$LOG"
grep -E "^(FAILED|ERROR)" "$OUT/parity.log" | head -20 | tee -a "$LOG"

if [ "$(left)" -gt 40 ]; then
  stage "model benchmarks"
  SUAN_BENCH_MAX_TIME=0.1 timeout "$(cap 200)" $PY -m pytest bench/test_models.py --benchmark-only -q \
      -p no:cacheprovider --benchmark-json="$OUT/bench_models.json" --benchmark-columns=median,rounds \
      > "$OUT/bench_models.log" 2>&1
  echo "model bench exit $? ($(tail -1 "$OUT/bench_models.log"))" | tee -a "$LOG"
fi

stage "tables"
$PY - "$OUT" <<'PYEOF' >> "$LOG" 2>&1
import json, os, sys
out = sys.argv[1]
merged = None
for name in ("bench_dense.json", "bench_sparse.json", "bench_models.json"):
    p = os.path.join(out, name)
    if os.path.exists(p) and os.path.getsize(p):
        d = json.load(open(p))
        if merged is None:
            merged = d
        else:
            merged["benchmarks"] += d["benchmarks"]
        os.remove(p)
if merged:
    json.dump(merged, open(os.path.join(out, "bench.json"), "w"), indent=1)
PYEOF
if [ -s "$OUT/bench.json" ]; then
  $PY bench/report.py "$OUT/bench.json" --markdown "$OUT/bench.md" > /dev/null 2>> "$LOG"
  $PY bench/summary.py "$OUT/bench.json" 2>&1 | tee "$OUT/summary.txt" | tee -a "$LOG"
fi
echo "total $(( $(date +%s) - t0 )) s" | tee -a "$LOG"
