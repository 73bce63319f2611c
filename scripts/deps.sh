#!/usr/bin/env bash
# Installs what a fresh Debian 12 machine lacks to build and test vitengine.
# CUDA (nvcc, cuBLAS) is optional: without it the CPU path alone is built.
set -euo pipefail
PKGS="build-essential cmake pkg-config libeigen3-dev libgtest-dev libgmock-dev libbenchmark-dev libstb-dev
      nlohmann-json3-dev libcpp-httplib-dev libcli11-dev libzip-dev libssl-dev
      python3 chromium openmpi-bin libopenmpi-dev ${VITENGINE_EXTRA_PKGS:-}"
# python3 + chromium: the headless-browser test of the web page (tests/serve_browser.py).
# openmpi-bin + libopenmpi-dev: data-parallel training (mpirun -np N vitengine train, docs/distributed.md).
missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  echo "deps: installing$missing"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
fi
