#!/usr/bin/env bash
# The numbers of docs/robustness.md, on the CPU: split bccd-cropped once into adaptation and test
# cells, store the stain reference and the out-of-distribution reference in the shipped model,
# then score normalisation, `adapt --unlabelled` and `vitengine adapt` (with and without
# rehearsal, and the one model for both labs) on the test cells.
#   WBC=PREPARED_WBC14 BCCD=../shared/data/bccd-cropped scripts/robustness.sh [OUT]
# WBC is wbc14 as `vitengine prepare` makes it (seed 0: the shipped model's split); KEEP is the
# rehearsed images per class (default 20). About an hour on 2 cores, most of it the runs that
# train every weight.
set -euo pipefail
cd "$(dirname "$0")/.."
V=${V:-build/vitengine}
WBC=${WBC:?set WBC to the prepared wbc14 folder}
BCCD=${BCCD:-../shared/data/bccd-cropped}
OUT=${1:-runs/robustness}
MAP=configs/bccd5.json
mkdir -p "$OUT"
M="$OUT/model.vit"
acc() { grep -o 'accuracy [0-9.]* macro-F1 [0-9.]*' "$1" | tail -1; }
echo "commit $(git rev-parse --short HEAD), $(nproc) CPUs, $(date -u +%FT%TZ), load $(cut -d' ' -f1-3 /proc/loadavg)"
"$V" prepare "$BCCD" --out "$OUT/bccd" --labels folders --split 28/0/72 --seed 0 --quiet
"$V" stain-ref --model weights/shipped/model.vit --data "$WBC" --out "$M"
# The energy score for comparison (its own file), then the Mahalanobis reference the model keeps.
"$V" ood-ref --score energy --model "$M" --data "$WBC" --out "$OUT/energy.vit" --fpr 0.05 --against "$BCCD"
"$V" ood-ref --score mahalanobis --model "$M" --data "$WBC" --out "$M" --fpr 0.05 --against "$BCCD"
for s in none reinhard macenko; do
  "$V" eval --model "$M" --data "$OUT/bccd" --split test --map $MAP --stain-norm $s --out "$OUT/ev_$s" >"$OUT/ev_$s.log" 2>&1
  echo "stain-norm $s: $(acc "$OUT/ev_$s.log")"
done
# Without labels: Reinhard + cell size + the map's restrict rule + d4, as shipped and after
# `adapt --unlabelled` on the adaptation cells and on the test cells themselves.
N="--stain-norm reinhard --cell-size normalize"
# shellcheck disable=SC2086
"$V" eval --model "$M" --data "$OUT/bccd" --split test --map $MAP --map-rule restrict $N --tta d4 \
  --out "$OUT/ev_restrict" >"$OUT/ev_restrict.log" 2>&1
echo "no labels, restrict: $(acc "$OUT/ev_restrict.log")"
# The lab's colour map fitted on the adaptation cells (their labels unused), with cell size, the
# restrict rule and d4: the setting chosen on the adaptation cells (docs/robustness.md).
"$V" stain-calibrate --model "$M" --data "$OUT/bccd" --split train --out "$OUT/calibrated.vit"
C="--stain-norm calibrated --cell-size normalize --map-rule restrict --tta d4"
# shellcheck disable=SC2086
"$V" eval --model "$OUT/calibrated.vit" --data "$OUT/bccd" --split test --map $MAP $C --out "$OUT/ev_calibrated" \
  >"$OUT/ev_calibrated.log" 2>&1
echo "no labels, calibrated: $(acc "$OUT/ev_calibrated.log")"
for split in train test; do
  # shellcheck disable=SC2086
  "$V" adapt --unlabelled --model "$M" --data "$OUT/bccd" --split $split $N --out "$OUT/tent_$split.vit" \
    >"$OUT/tent_$split.log" 2>&1
  # shellcheck disable=SC2086
  "$V" eval --model "$OUT/tent_$split.vit" --data "$OUT/bccd" --split test --map $MAP --map-rule restrict $N \
    --tta d4 --out "$OUT/ev_tent_$split" >"$OUT/ev_tent_$split.log" 2>&1
  echo "no labels, adapt --unlabelled on the $split cells: $(acc "$OUT/ev_tent_$split.log")"
done
# The head alone on cached features (the old default: seconds), then the default (every weight,
# fresh augmentation each step: minutes), then the default with rehearsal of the home data.
for mode in head default keep; do
  case $mode in
    head) extra="--freeze all-but-head" ;;
    default) extra="" ;;
    keep) extra="--keep-data $WBC --keep-per-class ${KEEP:-20}" ;;
  esac
  for shots in 6 17 0; do
    tag="${mode}_s${shots}"
    start=$(date +%s)
    # shellcheck disable=SC2086
    "$V" adapt --model "$M" --data "$OUT/bccd" --map $MAP --min-per-class 1 --shots $shots $extra \
      --out "$OUT/adapt_$tag.vit" >"$OUT/adapt_$tag.log" 2>&1
    secs=$(($(date +%s) - start))
    "$V" eval --model "$OUT/adapt_$tag.vit" --data "$OUT/bccd" --split test --map $MAP --out "$OUT/ev_$tag" \
      >"$OUT/ev_$tag.log" 2>&1
    echo "adapt $tag ($(grep -o 'on [0-9]* images' "$OUT/adapt_$tag.log" | head -1), ${secs} s): test $(acc "$OUT/ev_$tag.log")"
  done
  "$V" eval --model "$OUT/adapt_${mode}_s0.vit" --data "$WBC" --split test --out "$OUT/ev_wbc_${mode}_s0" \
    >"$OUT/ev_wbc.log" 2>&1
  echo "  the 97-cell model on wbc14 test: $(acc "$OUT/ev_wbc.log")"
done
# One model for both labs: every weight trained on all 97 cells beside the whole home train split,
# BOTH_PER_EPOCH home images per epoch (a seeded cycle through all of them), a cosine-decayed rate
# (about 15 min on 2 cores); then its home test accuracy.
# shellcheck disable=SC2086
start=$(date +%s)
"$V" adapt --model "$M" --data "$OUT/bccd" --map $MAP --min-per-class 1 --keep-data "$WBC" --keep-per-class 0 \
  --keep-per-epoch "${BOTH_PER_EPOCH:-400}" --lr "${BOTH_LR:-5e-5}" --lr-schedule cosine \
  --out "$OUT/adapt_both.vit" >"$OUT/adapt_both.log" 2>&1
secs=$(($(date +%s) - start))
"$V" eval --model "$OUT/adapt_both.vit" --data "$OUT/bccd" --split test --map $MAP --out "$OUT/ev_both" \
  >"$OUT/ev_both.log" 2>&1
"$V" eval --model "$OUT/adapt_both.vit" --data "$WBC" --split test --out "$OUT/ev_wbc_both" >"$OUT/ev_wbc_both.log" 2>&1
echo "adapt both (${secs} s): bccd test $(acc "$OUT/ev_both.log"); wbc14 test $(acc "$OUT/ev_wbc_both.log")"
