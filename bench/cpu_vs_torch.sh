#!/usr/bin/env bash
# vitengine's CPU path beside PyPI PyTorch (MKL + oneDNN) on this machine, alternating, ROUNDS
# rounds, THREADS threads each: vit_ti16 forward at batch 1 and 8 (fp32, and bf16 where the CPU has
# AMX) and the fp32 training step at batch 8. Writes bench/results/<date>-cpu-vit_ti16.json.
#   bench/cpu_vs_torch.sh                   # ~2 minutes once the venv exists
#   ROUNDS=3 BUILD=build TORCH_VENV=... bench/cpu_vs_torch.sh
# The peer's venv is made on first use (pip install torch torchvision from PyPI: a few GB with the
# CUDA wheels it pulls in). Not part of CI. Other work on the machine skews both sides: the script
# records `uptime` before every run; compare on a quiet machine.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
ROUNDS=${ROUNDS:-2}
THREADS=${THREADS:-2}
VENV=${TORCH_VENV:-$HOME/.cache/vitengine/torch-pypi}
OUTDIR=${OUTDIR:-bench/results}
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import torch, torchvision" 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --progress-bar off torch torchvision
fi
if [ ! -x "$BUILD/bench_cpu" ]; then
  cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DVITENGINE_BENCH=ON >/dev/null
  cmake --build "$BUILD" -j"$THREADS" --target bench_cpu
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for r in $(seq 1 "$ROUNDS"); do
  uptime >"$tmp/load_ours_$r"
  OMP_NUM_THREADS=$THREADS "$BUILD/bench_cpu" --benchmark_filter='BM_(Forward|Step)/' --benchmark_format=json \
    >"$tmp/ours_$r.json"
  uptime >"$tmp/load_torch_$r"
  OMP_NUM_THREADS=$THREADS "$VENV/bin/python" bench/cpu_step_torch.py --threads "$THREADS" --seconds 3 \
    >"$tmp/torch_$r.json"
  echo "round $r done" >&2
done
python3 bench/cpu_vs_torch_summary.py "$tmp" "$ROUNDS" "$THREADS" "$OUTDIR" "$(git rev-parse --short HEAD)"
