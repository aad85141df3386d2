#!/usr/bin/env bash
# One prepared GPU check for a lent H200: CUDA parity tests (compiled kernels, realistic sizes),
# then every benchmark group, then the static hot-loop report; JSON + Markdown under OUT; a short
# summary table printed.
# Installs nothing: it runs with the machine's python3, torch, triton, pytest, pytest-benchmark.
#
#   bash bench/gpu_check.sh OUT_DIR        (about 9 minutes at most)
set -u
OUT=${1:-gpu_check_out}
mkdir -p "$OUT"
# the kernels' folder under its import name suan_kernels, without installing anything
mkdir -p "$OUT/pkgs" && ln -sfn "$(pwd)/kernels" "$OUT/pkgs/suan_kernels"
export PYTHONPATH="$(cd "$OUT/pkgs" && pwd):$(pwd)${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
t0=$(date +%s)
$PY - > "$OUT/env.txt" 2>&1 <<'PYEOF'
import torch, triton, platform
print("date", __import__("datetime").datetime.now().isoformat())
print("gpu", torch.cuda.get_device_name(0), torch.cuda.get_device_capability(0))
print("torch", torch.__version__, "cuda", torch.version.cuda, "triton", triton.__version__, "python", platform.python_version())
PYEOF
cat "$OUT/env.txt"
echo "== parity on CUDA =="
timeout 240 $PY -m pytest tests/ops/test_cuda_realistic.py tests/ops/test_triton_parity.py tests/ops/test_layout.py \
    -q -x -k "cuda or realistic or lists_hold" -p no:cacheprovider > "$OUT/parity.log" 2>&1
echo "parity exit $? ($(tail -1 "$OUT/parity.log"))"
echo "== benchmarks =="
SUAN_BENCH_MAX_TIME=${SUAN_BENCH_MAX_TIME:-0.1} timeout $(( 470 - ($(date +%s) - t0) )) \
    $PY -m pytest bench --benchmark-only -q -p no:cacheprovider --benchmark-json="$OUT/bench.json" \
    --benchmark-columns=median,rounds > "$OUT/bench.log" 2>&1
echo "bench exit $? ($(tail -1 "$OUT/bench.log"))"
if [ -s "$OUT/bench.json" ]; then
  $PY bench/report.py "$OUT/bench.json" --markdown "$OUT/bench.md" > /dev/null
  $PY bench/summary.py "$OUT/bench.json" | tee "$OUT/summary.txt"
fi
echo "== hot-loop report (static, sm_90 SASS; compare with the TFLOP/s above) =="
timeout 120 $PY -m bench.compile_check --hot-loop --json "$OUT/hot_loop.json" > "$OUT/hot_loop.md" 2>&1
echo "hot-loop exit $?"; grep -A4 "^| figure" "$OUT/hot_loop.md"
echo "total $(( $(date +%s) - t0 )) s"
