#!/usr/bin/env bash
# The README's first command, on a fresh Debian 12 machine: install what is missing,
# build the vitengine CLI (CPU path; CUDA too when nvcc is present), then the main job
# on the bundled fixture (tests/fixtures/quickstart, 280 cell images):
#   1. train a tiny ViT from scratch on the CPU and evaluate it (runs/quickstart/);
#   2. classify three cells with the shipped model (weights/shipped/model.vit) and
#      write an attention map and a smear-level differential report.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
# The CLI alone: no GoogleTest, Google Benchmark or browser (the test command installs those).
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DVITENGINE_BUILD_TESTS=OFF ${VITENGINE_CMAKE_ARGS:-} >/dev/null
cmake --build build -j"$(nproc)" --target vitengine
out=runs/quickstart
if [ -e "$out/last.vit" ]; then
  echo "quickstart: $out already holds a run; moving it to $out.old"
  rm -rf "$out.old"; mv "$out" "$out.old"
fi
bash scripts/train_quickstart.sh "$out"
imgs="tests/fixtures/quickstart/images/SNE_101188.jpg tests/fixtures/quickstart/images/$(ls tests/fixtures/quickstart/images | grep '^EO_' | head -1) tests/fixtures/quickstart/images/$(ls tests/fixtures/quickstart/images | grep '^MYO_' | head -1)"
echo; echo "== the shipped model on three cells"
./build/vitengine predict $imgs
./build/vitengine explain tests/fixtures/quickstart/images/SNE_101188.jpg --out "$out/explain"
./build/vitengine differential tests/fixtures/quickstart/images --out "$out/differential.html"
echo; echo "quickstart: done. See $out/summary.md, $out/eval-test/summary.md, $out/explain/ and $out/differential.html"
