#!/usr/bin/env bash
# The data-parallel checks that need a GPU (docs/distributed.md), for a machine with one card:
# one rank, so NCCL's all-reduce runs over a communicator of one. Builds nothing: BUILD is a
# build folder made with -DVITENGINE_CUDA=ON -DVITENGINE_MPI=ON -DVITENGINE_NCCL=ON
# (and -DVITENGINE_NATIVE=OFF when built on another CPU).
#
#   BUILD=build-gpu OUT=$OUT tools/gpu_check_dist.sh      (~3 minutes on an H200)
#
#   1. NCCL at one rank against the plain GPU run: the quick start, 10 steps, fp32; steps.csv
#      must match step for step (rel 1e-5; with one rank the sum is a copy, so expect equality).
#   2. The cost of the all-reduce path on the vit_b16 step: the same 40 steps at batch 32,
#      224 px, bf16, images on the device, plain and under mpirun -np 1, twice each, alternating;
#      the median img/s of steps 11-40 of each, and the ratio (target: at most 3% slower).
#   3. All-reduce bandwidth at vit_b16's gradient size (85.8 M fp32 = 343 MB): nccl-tests'
#      all_reduce_perf if it is on the machine (one rank measures a local copy, not a link).
# Writes $OUT/dist_check.log.
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build-gpu}
OUT=${OUT:-$PWD/gpu_out}
BIN="$BUILD/vitengine"
MPI="mpirun -np 1 --allow-run-as-root"
T=$(mktemp -d)
mkdir -p "$OUT"
exec > >(tee "$OUT/dist_check.log") 2>&1
echo "=== $(date -u) $(git rev-parse --short HEAD 2>/dev/null) $(nvidia-smi --query-gpu=name --format=csv,noheader)"
QS="train --config configs/quickstart.json --data tests/fixtures/quickstart --set device=cuda precision=fp32 max_steps=10"

echo "=== 1. NCCL at one rank vs the plain GPU run"
timeout 300 "$BIN" $QS --out "$T/plain" > "$T/plain.log" 2>&1 || { echo "plain run failed"; tail "$T/plain.log"; }
timeout 300 $MPI "$BIN" $QS --out "$T/nccl" > "$T/nccl.log" 2>&1 || { echo "mpirun -np 1 failed"; tail "$T/nccl.log"; }
python3 - "$T/plain/steps.csv" "$T/nccl/steps.csv" <<'PY'
import csv, sys
a = [float(r["loss"]) for r in csv.DictReader(open(sys.argv[1]))]
b = [float(r["loss"]) for r in csv.DictReader(open(sys.argv[2]))]
worst = max(abs(x - y) / abs(x) for x, y in zip(a, b)) if a and len(a) == len(b) else float("inf")
print(f"steps {len(a)} vs {len(b)}; worst relative loss difference {worst:.3g}:",
      "PASS" if worst <= 1e-5 else "FAIL")
PY

echo "=== 2. the all-reduce path's cost on the vit_b16 step"
# 168 fixture images: batch 32 gives 5 steps an epoch, and the median keeps the epoch-end
# steps (checkpoint written) out of the figure; eval_every above epochs: no validation
B16="train --data tests/fixtures/quickstart --set device=cuda model=vit_b16 batch_size=32 max_steps=40 log_every=1
     data_on_device=true epochs=1000 eval_every=2000"
for round in 1 2; do
  for mode in plain nccl; do
    pre=""; [ $mode = nccl ] && pre="$MPI"
    rm -rf "$T/b16"
    timeout 240 $pre "$BIN" $B16 --out "$T/b16" > "$T/b16-$mode-$round.log" 2>&1 || echo "$mode round $round failed"
    python3 - "$T/b16-$mode-$round.log" "$mode" "$round" <<'PY'
import re, statistics, sys
v = [float(m.group(2)) for m in re.finditer(r"step (\d+)/\d+ .*?\| ([\d.]+) img/s", open(sys.argv[1]).read())
     if int(m.group(1)) > 10]
print(f"{sys.argv[2]} round {sys.argv[3]}: median {statistics.median(v) if v else float('nan'):.1f} img/s over {len(v)} steps")
PY
  done
done

echo "=== 3. all-reduce bandwidth at 343 MB"
if command -v all_reduce_perf > /dev/null; then
  all_reduce_perf -b 343M -e 343M -g 1 -n 20
else
  echo "nccl-tests' all_reduce_perf is not installed: not measured (one card measures no link anyway)"
fi
rm -rf "$T"
