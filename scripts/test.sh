#!/usr/bin/env bash
# The test command (README, .ci/run): build, then every CPU test. GPU tests (label gpu)
# skip with a message where there is no device.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
bash scripts/build.sh
ctest --test-dir build --output-on-failure -j"$(nproc)" --timeout 900
echo "test suite wall time: $(( $(date +%s) - start )) s (build included)"
