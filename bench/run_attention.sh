#!/usr/bin/env bash
# On the GPU machine, with a build carried from a development machine (nothing is compiled here):
#   bash bench/run_attention.sh [build-dir] [out-dir]
# Runs the attention GPU tests, bench_attention and PyTorch's SDPA at the same shape, then prints one
# table. Results: <out-dir>/attention_gtest.log, attention_bench.json, attention_sdpa.json.
# Build beforehand (on the development machine):
#   cmake -S . -B build -DVITENGINE_CUDA=ON -DVITENGINE_BENCH=ON -DVITENGINE_NATIVE=OFF
#   cmake --build build -j2 --target vitengine_gpu_tests bench_attention
set -uo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build}
OUT=${2:-${OUT:-/tmp/attention_results}}
PY=${PYTHON:-/opt/torch/.venv/bin/python}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,clocks.max.sm,memory.total --format=csv,noheader || true

echo "== gpu tests (attention) =="
"$BUILD"/vitengine_gpu_tests --gtest_filter='Attention*' 2>&1 | tee "$OUT/attention_gtest.log" | grep -E '^\[ (bf16|fp32|seed|  FAILED|  PASSED|  SKIPPED)|FAILED|Failure|rel err' | head -80
test_rc=${PIPESTATUS[0]}

echo "== bench_attention =="
"$BUILD"/bench_attention --benchmark_min_time=0.3 --benchmark_format=console \
  --benchmark_out="$OUT/attention_bench.json" --benchmark_out_format=json
bench_rc=$?

echo "== PyTorch scaled_dot_product_attention =="
PYTHONUNBUFFERED=1 "$PY" bench/attention_pytorch.py --out "$OUT/attention_sdpa.json" >/dev/null
sdpa_rc=$?

"$PY" - "$OUT/attention_bench.json" "$OUT/attention_sdpa.json" <<'EOF'
import json, sys
ours = json.load(open(sys.argv[1]))
sdpa = json.load(open(sys.argv[2])) if len(sys.argv) > 2 else {"results": []}
print(f"\ncard: {ours['context'].get('card')}  validation: {ours['context'].get('validation')}")
print(f"{'what':28s} {'time (us)':>10s} {'TFLOP/s':>8s}")
for b in ours["benchmarks"]:
    print(f"{b['name']:28s} {b['real_time']:10.1f} {b.get('TFLOP/s', 0):8.1f}")
for r in sdpa.get("results", []):
    if "error" in r:
        print(f"sdpa {r['backend']:10s} {r['layout']:12s} unavailable: {r['error'][:60]}")
        continue
    name = f"sdpa_{r['name'][5:]}_{r['backend']}" + ("" if r["layout"] == "contiguous" else "_vitviews")
    print(f"{name:28s} {r['ms_median'] * 1000:10.1f} {r['tflops']:8.1f}")
EOF
echo "exit codes: tests $test_rc, bench $bench_rc, sdpa $sdpa_rc"
[ "$test_rc" = 0 ] && [ "$bench_rc" = 0 ] && [ "$sdpa_rc" = 0 ]
