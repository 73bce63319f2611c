#!/usr/bin/env bash
# Configures and builds vitengine into build/ (Release). CUDA is built when nvcc is found.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release ${VITENGINE_CMAKE_ARGS:-} >/dev/null
cmake --build build -j"$(nproc)"
