#!/usr/bin/env bash
# Configures and builds vitengine and its tests into build/ (Release). CUDA is built when nvcc is found.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh --test
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DVITENGINE_BUILD_TESTS=ON ${VITENGINE_CMAKE_ARGS:-} >/dev/null
cmake --build build -j"$(nproc)"
