#!/usr/bin/env bash
# The CPU quick start of docs/training.md: train a tiny ViT on the bundled 280-image
# fixture, then evaluate it on the fixture's test split. Needs a built ./build/vitengine
# (bash scripts/build.sh). Output: runs/quickstart/ (best.vit, metrics.csv, pictures,
# summary.md) and runs/quickstart/eval-test/ (metrics.json, pictures, summary.md).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/quickstart}
if [ -e "$out/last.vit" ]; then
  echo "$out already holds a run; remove it or pass another folder" >&2
  exit 1
fi
./build/vitengine train --config configs/quickstart.json --data tests/fixtures/quickstart --out "$out"
./build/vitengine eval --model "$out/best.vit" --data tests/fixtures/quickstart --split test --out "$out/eval-test"
