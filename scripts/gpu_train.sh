#!/usr/bin/env bash
# Trains the shipped model on the GPU machine, then runs the PyTorch reference recipe on
# the same card, the same split and the same time budget, side by side.
#   BUDGET=150 OUT=$OUT bash scripts/gpu_train.sh          (SKIP_REF=1: vitengine only)
#   CONFIG=configs/wbc14_vit_ti16_shift.json ...             (another recipe; default: the shipped one)
#   SETS="--set data_on_device=true --set augment=light" BUDGET=150 OUT=$OUT bash scripts/gpu_train.sh
#     (SETS: extra train overrides; this one augments on the GPU, docs/training.md)
# Needs: ~/data/wbc14 (the three shards unpacked), .device/train/{vitengine,lib/,prepared-wbc14/}
# (built here with -DVITENGINE_NATIVE=OFF, see docs/performance.md). Writes to $OUT:
# train.log, run.tar.gz (metrics, pictures, summary), best.vit.part-*, eval.tar.gz, torch.log, torch.json
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/out}; BUDGET=${BUDGET:-150}; SETS=${SETS:-}; D=.device/train
CONFIG=${CONFIG:-configs/wbc14_vit_ti16.json}
export LD_LIBRARY_PATH=$PWD/$D/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
# The binary and manifest travel gzipped (the upload limit is 64 MiB with the third shard).
for f in $D/vitengine $D/prepared-wbc14/manifest.csv; do [ -f $f.gz ] && gunzip -f $f.gz; done
chmod +x $D/vitengine
T0=$(date +%s)
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
echo "binaries from commit $(cat $D/COMMIT 2>/dev/null || echo "? (no $D/COMMIT; checkout HEAD $(git rev-parse --short HEAD 2>/dev/null))"), $(date -u +%FT%TZ), $(nproc) cores"
RUN=/tmp/run_ship
echo "recipe: $CONFIG $SETS"
$D/vitengine train --config $CONFIG --data $D/prepared-wbc14 --out $RUN \
  --set data_root=$HOME/data/wbc14 --set threads=$(( $(nproc) - 1 )) --set time_budget_s=$BUDGET \
  --set checkpoint_every=0 $SETS 2>&1 | tee $OUT/train.log | grep -v '^\[train\] epoch .* step .*[^0]0/' | tail -40
echo "== train done at $(( $(date +%s) - T0 ))s"
$D/vitengine eval --model $RUN/best.vit --data $D/prepared-wbc14 --data-root $HOME/data/wbc14 --split test \
  --out $RUN/eval-test --device cuda --batch-size 256 --threads $(( $(nproc) - 1 )) 2>&1 | tail -3 || \
$D/vitengine eval --model $RUN/best.vit --data $D/prepared-wbc14 --data-root $HOME/data/wbc14 --split test \
  --out $RUN/eval-test 2>&1 | tail -3
$D/vitengine eval --model $RUN/best.vit --data $D/prepared-wbc14 --data-root $HOME/data/wbc14 --split test \
  --out $RUN/eval-test-d4 --tta d4 --device cuda --batch-size 256 --threads $(( $(nproc) - 1 )) 2>&1 | tail -2
echo "== eval done at $(( $(date +%s) - T0 ))s"
(cd $RUN && tar czf $OUT/run.tar.gz --exclude='*.vit' .)
split -b 15m $RUN/best.vit $OUT/best.vit.part-
ls -la $RUN $OUT
if [ "${SKIP_REF:-0}" = 1 ]; then echo "== total $(( $(date +%s) - T0 ))s (reference skipped: SKIP_REF=1)"; exit 0; fi
echo "== PyTorch reference recipe, vit_ti16, same split and budget"
PYTHONUNBUFFERED=1 timeout $(( BUDGET + 150 )) python3 $D/pytorch_reference.py --data $HOME/data/wbc14 \
  --models vit_ti16 --budgets $BUDGET --lr 1e-3 --split-manifest $D/prepared-wbc14/manifest.csv --out $OUT \
  > $OUT/torch.log 2>&1 || echo "reference rc=$?"
tail -5 $OUT/torch.log; mv $OUT/results.json $OUT/torch.json 2>/dev/null
echo "== total $(( $(date +%s) - T0 ))s"
