#!/usr/bin/env bash
# The one script to run on the GPU machine. It builds nothing: it runs the prebuilt
# binaries of a build folder made on the development machine, then prints a table.
#
#   BUILD=.device/bin OUT=$OUT [COMMIT=<sha>] [NO_COMPILE=1] tools/gpu_check.sh
# (BUILD: a build folder, or the folder tools/gpu_bundle.sh packed from one.)
#
# Steps (each under its own timeout; a failing step never stops the next; ~6 minutes total):
#   1. the card (nvidia-smi) and which cuBLAS/cuDNN the loader finds
#   2. the gpu tests: vitengine_gpu_tests (the same tests ctest -L gpu runs), JSON report
#   3. bench_ops_cuda, bench_e2e_cuda, bench_attention (branch cuda-attn) if built -> JSON
#   4. bench/pytorch_bench.py with /opt/torch/.venv/bin/python (torch.compile unless NO_COMPILE=1)
#   5. tools/bench_table.py: merges everything into $OUT/<date>-<card>.json and prints the table
#   2b. (when BUILD has vitengine) a random torchvision vit_b_16 saved
#       like the published file, converted, compared on the CPU and the GPU -> extra.log
# Files written to $OUT (at most 8 come back): gpu_tests.json, gpu_tests.log, extra.log, ops.json,
# e2e.json, attn.json (if an attention bench exists), pytorch.json, <date>-<card>.json.
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build-gpu}
OUT=${OUT:-$PWD/gpu_out}
PY=${PY:-/opt/torch/.venv/bin/python}
mkdir -p "$OUT"
T0=$(date +%s)
ORIG_LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}
step() { echo; echo "=== [$(( $(date +%s) - T0 ))s] $*"; }

step "card"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,power.limit --format=csv 2>&1 || echo "nvidia-smi failed"
nvidia-smi 2>&1 | head -15
step "libraries the loader knows"
ldconfig -p 2>/dev/null | grep -E 'cublas|cudnn|cudart' || echo "(none in ldconfig)"
ls /usr/local/cuda/lib64 2>/dev/null | grep -E '^lib(cublas|cublasLt|cudart|cudnn)\.so' | head
# Make sure the binaries resolve their libraries: the bundle folder itself (tools/gpu_bundle.sh
# puts libbenchmark there), CUDA's lib64, then PyTorch's wheels.
export LD_LIBRARY_PATH="$(cd "$BUILD" 2>/dev/null && pwd)${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
EXTRA=/usr/local/cuda/lib64
for d in /opt/torch/.venv/lib/python3*/site-packages/nvidia/*/lib; do [ -d "$d" ] && EXTRA="$EXTRA:$d"; done
if ldd "$BUILD/vitengine_gpu_tests" 2>/dev/null | grep -q "not found"; then
  export LD_LIBRARY_PATH="$EXTRA${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  echo "LD_LIBRARY_PATH set to $LD_LIBRARY_PATH"
fi
ldd "$BUILD/vitengine_gpu_tests" 2>/dev/null | grep -E 'cublas|cudart|cudnn' || echo "ldd: $BUILD/vitengine_gpu_tests missing?"
for b in "$BUILD"/vitengine_gpu_tests "$BUILD"/bench_*; do
  [ -x "$b" ] && ldd "$b" 2>/dev/null | grep "not found" | sed "s|^|$(basename "$b"): |"
done

step "gpu tests"
export VIT_TEST_DATA="$PWD/tests/data"
timeout 200 "$BUILD/vitengine_gpu_tests" --gtest_output=json:"$OUT/gpu_tests.json" > "$OUT/gpu_tests.log" 2>&1
echo "gpu tests rc=$?"
grep -E '^\[  (FAILED|PASSED|SKIPPED) |tests ran|Failure|error|expected|Which is|relative L2' "$OUT/gpu_tests.log" | head -60

if [ -x "$BUILD/vitengine" ]; then
  step "torchvision vit_b_16 -> vitengine convert -> logits on cpu and gpu"
  timeout 300 "$PY" tools/check_vit_b16_import.py --vitengine "$BUILD/vitengine" \
    --workdir /tmp/vitb16 --gpu-tests "$BUILD/vitengine_gpu_tests" > "$OUT/extra.log" 2>&1
  echo "vit_b_16 import check rc=$?"
  grep -E '^\[  (FAILED|PASSED|SKIPPED|  OK) |convert:|vit_b_16:|Failure|relative' "$OUT/extra.log" | head -20
  rm -rf /tmp/vitb16
fi

if [ -x "$BUILD/bench_ops_cuda" ]; then
  step "bench_ops_cuda"
  timeout 90 "$BUILD/bench_ops_cuda" --benchmark_out="$OUT/ops.json" --benchmark_out_format=json 2>&1 | tail -32
  echo "rc=${PIPESTATUS[0]}"
fi

step "bench_e2e_cuda"
timeout 150 "$BUILD/bench_e2e_cuda" --benchmark_out="$OUT/e2e.json" --benchmark_out_format=json 2>&1 | tail -15
echo "rc=${PIPESTATUS[0]}"

step "where the vit_b16 training step's GPU time goes (VIT_PROFILE=1, eager step)"
VIT_PROFILE=1 timeout 60 "$BUILD/bench_e2e_cuda" --benchmark_filter='BM_Train/model:0/graph:0' 2>&1 | grep '^\[profile\]' | head -34

for b in "$BUILD"/bench_attention "$BUILD"/bench_*cuda*; do
  case "$(basename "$b")" in bench_ops_cuda|bench_e2e_cuda) continue ;; esac
  [ -x "$b" ] || continue
  step "$(basename "$b")"
  timeout 60 "$b" --benchmark_out="$OUT/attn.json" --benchmark_out_format=json 2>&1 | tail -12
  echo "rc=${PIPESTATUS[0]}"
done

step "PyTorch on the same card"
PTFLAGS=""
[ "${NO_COMPILE:-0}" = "1" ] || PTFLAGS="--compile"
LD_LIBRARY_PATH="$ORIG_LD_LIBRARY_PATH" timeout 210 "$PY" bench/pytorch_bench.py --out "$OUT/pytorch.json" $PTFLAGS > "$OUT/pytorch.log" 2>&1
echo "rc=$?"; tail -30 "$OUT/pytorch.log"; rm -f "$OUT/pytorch.log"

step "table"
# the commit the binaries were built from (tools/gpu_bundle.sh writes it), else this checkout's
[ -z "${COMMIT:-}" ] && [ -f "$BUILD/COMMIT" ] && COMMIT=$(cat "$BUILD/COMMIT")
COMMIT=${COMMIT:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}
ATTN=""; [ -f "$OUT/attn.json" ] && ATTN="--attn $OUT/attn.json"
PY3=$(command -v python3 || echo "$PY")
OPS=""; [ -f "$OUT/ops.json" ] && OPS="--ops $OUT/ops.json"
"$PY3" tools/bench_table.py $OPS --e2e "$OUT/e2e.json" $ATTN --pytorch "$OUT/pytorch.json" \
  --tests "$OUT/gpu_tests.json" --commit "$COMMIT" --outdir "$OUT" 2>&1 || echo "bench_table failed"
echo "total $(( $(date +%s) - T0 ))s"
