#!/usr/bin/env bash
# A/B of masked-autoencoder pretraining at CPU scale, over paired seeds (docs/pretraining.md):
#   DATA=<prepared wbc14 with 64 px packs> OUT=/tmp/mae_ab bash scripts/cpu_mae_ablation.sh
# For each seed in SEEDS (default "0 1 2 3"):
#   scratch: train configs/cpu_ablation_small.json for EPOCHS (30) epochs from a random init;
#   mae:     pretrain configs/cpu_mae_small.json for PRE (15) epochs on the same train subset, then
#            fine-tune its encoder for EPOCHS - PRE epochs (layer_decay LD, default 0.75):
#            the same number of passes over the images in total.
# FT (fine-tune epochs) and SCRATCH (scratch epochs) override those counts, for the other question:
#   PRE=100 FT=15 SCRATCH=15: does a long pretraining help when the labelled epochs are equal?
# Then prints val accuracy / macro-F1 per seed and the per-seed differences (mae - scratch).
# The packs make it fast: vitengine pack --size 64 --subset 20 (train) and --size 64 (val) into DATA.
set -eu
cd "$(dirname "$0")/.."
DATA=${DATA:?set DATA to a prepared folder}; OUT=${OUT:-/tmp/mae_ab}; SEEDS=${SEEDS:-0 1 2 3}
EPOCHS=${EPOCHS:-30}; PRE=${PRE:-15}; LD=${LD:-0.75}; FT=${FT:-$((EPOCHS - PRE))}; SCRATCH=${SCRATCH:-$EPOCHS}
BIN=${BIN:-build/vitengine}
mkdir -p "$OUT"
for seed in $SEEDS; do
  run=$OUT/scratch-s$seed
  if ! [ -f $run/best.vit ]; then
    echo "== scratch seed $seed"
    $BIN train --config configs/cpu_ablation_small.json --data "$DATA" --out $run --set seed=$seed \
      --set epochs=$SCRATCH 2>&1 | tail -1
  fi
  pre=$OUT/pretrain-s$seed
  if ! [ -f $pre/encoder.vit ] || ! grep -q "^$PRE," $pre/metrics.csv; then
    echo "== pretrain seed $seed"
    resume=""  # an interrupted pretraining continues (pretrain refuses to start over its last.vit)
    [ -f $pre/last.vit ] && resume=--resume
    $BIN pretrain --config configs/cpu_mae_small.json --data "$DATA" --out $pre --set seed=$seed \
      --set epochs=$PRE $resume 2>&1 | tail -1
  fi
  run=$OUT/mae-s$seed
  if ! [ -f $run/best.vit ]; then
    echo "== fine-tune seed $seed"
    $BIN train --config configs/cpu_ablation_small.json --data "$DATA" --out $run --set seed=$seed \
      --set epochs=$FT --set init=$pre/encoder.vit --set layer_decay=$LD 2>&1 | tail -1
  fi
done
python3 - "$OUT" $SEEDS <<'PY'
import csv, sys
out, seeds = sys.argv[1], sys.argv[2:]
res = {}
for arm in ("scratch", "mae"):
    for s in seeds:
        r = list(csv.DictReader(open(f"{out}/{arm}-s{s}/metrics.csv")))[-1]
        res[arm, s] = (float(r["val_acc"]), float(r["val_macro_f1"]), float(r["elapsed_s"]))
        print(f"{arm:8s} seed {s}: val acc {res[arm, s][0]:.4f} macro-F1 {res[arm, s][1]:.4f} "
              f"(epoch {r['epoch']}, {res[arm, s][2]:.0f} s)")
for i, name in enumerate(("acc", "macro-F1")):
    d = [res["mae", s][i] - res["scratch", s][i] for s in seeds]
    print(f"mae - scratch, {name}: " + " ".join(f"{x:+.4f}" for x in d) + f"  mean {sum(d) / len(d):+.4f}")
PY
