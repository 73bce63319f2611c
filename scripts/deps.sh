#!/usr/bin/env bash
# Installs what a fresh Debian 12 machine lacks to build vitengine, and with --test to test it.
# CUDA (nvcc, cuBLAS) is optional: without it the CPU path alone is built.
set -euo pipefail
# What building and running the CLI needs (the README's quick start; Open MPI for
# mpirun -np N vitengine train, docs/distributed.md) ...
PKGS="build-essential cmake pkg-config libeigen3-dev libstb-dev nlohmann-json3-dev libcpp-httplib-dev libcli11-dev
      libzip-dev libssl-dev libtiff-dev python3 openmpi-bin libopenmpi-dev ${VITENGINE_EXTRA_PKGS:-}"
# ... and, with --test (the test command), what only the tests need: GoogleTest, Google Benchmark,
# chromium for the headless-browser test of the web page (tests/serve_browser.py), and
# scikit-learn's digits for the second example's smoke test (tools/make_digits.py), and Prometheus'
# own text parser for the /metrics test (tests/serve_prometheus.py); openssl makes the TLS test's certificate.
if [ "${1:-}" = "--test" ]; then
  PKGS="$PKGS libgtest-dev libgmock-dev libbenchmark-dev chromium python3-sklearn python3-prometheus-client openssl python3-venv"
fi
# With CUDA: pip fetches cudnn-frontend's headers (attention=cudnn; scripts/cudnn_frontend.sh).
HAS_NVCC=0
{ command -v nvcc || [ -x /usr/local/cuda/bin/nvcc ]; } > /dev/null 2>&1 && HAS_NVCC=1
[ $HAS_NVCC = 1 ] && PKGS="$PKGS python3-pip"
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
[ $HAS_NVCC = 1 ] && bash "$(dirname "$0")/cudnn_frontend.sh"
exit 0
