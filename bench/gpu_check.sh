#!/usr/bin/env bash
# One prepared GPU check for a lent H200, in stages that each have their own time cap (a stage
# that hangs or fails costs its cap, not the run), most important first:
#   0. environment and the card's two ceilings (bf16 matmul TFLOP/s, device copy GB/s)
#   1. parity at realistic sizes (B=64, L up to 4096, dense / window / dilated, bias gradients)
#   2. the dense table, streamed line by line (bench/gpu_quick.py): the fused op with and without
#      bias, FlashAttention-2 (SDPA flash, causal, no bias: the shape's speed of light), SDPA +
#      bias mask, the eager reference (L <= 2048); a kernel profile at L=4096
#   3. the block-sparse benchmarks (pytest-benchmark: dense vs windows 32 and 128)
#   4. compiled FlexAttention, same score/mask functions (its compile takes minutes)
#   5. the generated-case parity tests on CUDA, with what time is left
#   6. the static hot-loop report (python -m bench.compile_check --hot-loop), if time is left
# Installs nothing: it runs with the machine's python3, torch, triton, pytest, pytest-benchmark,
# hypothesis. Writes at most 8 files under OUT (the device tool's limit); the log ends with a
# short summary.
#
#   bash bench/gpu_check.sh OUT_DIR [TOTAL_SECONDS]        (default 600 s)
#
# First lease (2026-11-29): a pytest-benchmark run killed at its cap writes no JSON at all, and
# 8 xdist workers compiling at once made realistic tests time out: hence gpu_quick.py's streamed
# lines and the sequential, verbose parity runs.
set -u
OUT=${1:-gpu_check_out}
TOTAL=${2:-600}
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

stage "parity at realistic sizes"
timeout "$(cap 150)" $PY -m pytest tests/ops/test_cuda_realistic.py tests/ops/test_triton_parity.py -v --tb=short \
    -p no:cacheprovider --timeout 100 -k "realistic or bias_grads_cuda" > "$OUT/parity.log" 2>&1
echo "realistic parity exit $?" | tee -a "$LOG"
grep -E "PASSED|FAILED|ERROR|^E " "$OUT/parity.log" | head -40 | tee -a "$LOG"

stage "dense table (streamed)"
timeout "$(cap 170)" $PY bench/gpu_quick.py --lengths 1024 2048 4096 8192 \
    --impls triton triton-nobias flash sdpa reference --profile 4096 --out "$OUT/quick.jsonl" > "$OUT/quick.txt" 2>&1
echo "dense table exit $?" | tee -a "$LOG"
grep -E "^(RESULT|FAILED|\|)" "$OUT/quick.txt" | tee -a "$LOG"

stage "sparse benchmarks"
SUAN_BENCH_LENGTHS=1024,4096 SUAN_BENCH_MAX_TIME=0.1 timeout "$(cap 70)" $PY -m pytest bench/test_attention.py \
    --benchmark-only -q -p no:cacheprovider -k "sparse" --benchmark-json="$OUT/bench.json" \
    --benchmark-columns=median,rounds > "$OUT/bench_sparse.log" 2>&1
echo "sparse bench exit $? ($(tail -1 "$OUT/bench_sparse.log"))" | tee -a "$LOG"
if [ -s "$OUT/bench.json" ]; then
  $PY bench/report.py "$OUT/bench.json" --markdown "$OUT/bench.md" > /dev/null 2>> "$LOG"
  $PY bench/summary.py "$OUT/bench.json" 2>&1 | tee -a "$LOG"
fi

stage "FlexAttention (compiled)"
timeout "$(cap 180)" $PY bench/gpu_quick.py --lengths 1024 4096 --impls flex triton --out "$OUT/quick.jsonl" \
    >> "$OUT/quick.txt" 2>&1
echo "flex exit $?" | tee -a "$LOG"
grep -E "^(RESULT +flex|FAILED)" "$OUT/quick.txt" | tee -a "$LOG"

if [ "$(left)" -gt 30 ]; then
  stage "generated-case parity on CUDA"
  timeout "$(cap 300)" $PY -m pytest tests/ops/test_triton_parity.py -v --tb=short -p no:cacheprovider \
      --timeout 200 -k "cuda" >> "$OUT/parity.log" 2>&1
  echo "generated parity exit $?" | tee -a "$LOG"
  grep -E "(PASSED|FAILED|ERROR).*cuda|^E " "$OUT/parity.log" | head -30 | tee -a "$LOG"
fi
if [ "$(left)" -gt 60 ]; then
  stage "hot-loop report (static, sm_90 SASS of this machine's triton; beside the TFLOP/s above)"
  timeout "$(cap 120)" $PY -m bench.compile_check --hot-loop > "$OUT/hot_loop.md" 2>&1
  echo "hot-loop exit $?" | tee -a "$LOG"
  grep -A4 "^| figure" "$OUT/hot_loop.md" | tee -a "$LOG"
fi
echo "total $(( $(date +%s) - t0 )) s" | tee -a "$LOG"
