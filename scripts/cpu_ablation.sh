#!/usr/bin/env bash
# A/B of one training-recipe change at CPU scale (configs/cpu_ablation_small.json), over seeds:
#   DATA=<prepared wbc14 with 64 px packs> OUT=/tmp/ablation bash scripts/cpu_ablation.sh "translate=0.03 reflect_border=true"
# Runs the base config and the base config plus the given --set overrides for each seed in
# SEEDS (default "0 1"), then prints val accuracy / macro-F1 per run and the mean difference.
# BASE="k=v ..." adds overrides to both arms (to test a change on top of an earlier one).
# The packs make it fast: vitengine pack --size 64 --subset 20 (train) and --size 64 (val) into DATA.
set -eu
cd "$(dirname "$0")/.."
DATA=${DATA:?set DATA to a prepared folder}; OUT=${OUT:-/tmp/ablation}; SEEDS=${SEEDS:-0 1}; BASE=${BASE:-}
VARIANT=${1:?give the overrides of the variant, e.g. "translate=0.03 reflect_border=true"}
BIN=${BIN:-build/vitengine}
mkdir -p "$OUT"
for seed in $SEEDS; do
  for arm in base variant; do
    sets=(--set seed=$seed)
    for kv in $BASE; do sets+=(--set "$kv"); done
    [ $arm = variant ] && for kv in $VARIANT; do sets+=(--set "$kv"); done
    run=$OUT/$arm-s$seed
    [ -f $run/metrics.csv ] && [ -f $run/best.vit ] && continue  # done before
    echo "== $arm seed $seed: ${sets[*]}"
    $BIN train --config configs/cpu_ablation_small.json --data "$DATA" --out $run "${sets[@]}" 2>&1 | tail -2
  done
done
python3 - "$OUT" $SEEDS <<'PY'
import csv, sys
out, seeds = sys.argv[1], sys.argv[2:]
res = {}
for arm in ("base", "variant"):
    for s in seeds:
        rows = list(csv.DictReader(open(f"{out}/{arm}-s{s}/metrics.csv")))
        r = rows[-1]
        res[arm, s] = (float(r["val_acc"]), float(r["val_macro_f1"]))
        print(f"{arm:8s} seed {s}: val acc {res[arm, s][0]:.4f} macro-F1 {res[arm, s][1]:.4f} (epoch {r['epoch']})")
for i, name in enumerate(("acc", "macro-F1")):
    d = [res["variant", s][i] - res["base", s][i] for s in seeds]
    print(f"variant - base, {name}: " + " ".join(f"{x:+.4f}" for x in d) + f"  mean {sum(d) / len(d):+.4f}")
PY
