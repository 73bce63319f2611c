#!/usr/bin/env bash
# Packs what tools/gpu_check.sh needs from a build folder into one small folder to carry to
# the GPU machine (the build folder itself, with object files, is far over the 64 MiB limit):
# the CLI, the test and benchmark binaries, plus the non-CUDA shared libraries they load that a
# CUDA + PyTorch machine may lack (Debian's libbenchmark, libgomp, libzip, cpp-httplib, brotli, bz2;
# the list was read off the H100 machine, where only these were "not found").
#
#   cmake -S . -B build-gpu -DVITENGINE_CUDA=ON -DVITENGINE_NATIVE=OFF
#   cmake --build build-gpu -j2 --target vitengine vitengine_gpu_tests bench_ops_cuda bench_e2e_cuda bench_attention
#   tools/gpu_bundle.sh build-gpu .device/bin        # then carry .device/bin (git-ignored)
#   (on the GPU machine)  BUILD=.device/bin OUT=$OUT tools/gpu_check.sh
#   PREPARED=/path/prepared-wbc14 tools/gpu_bundle.sh build-gpu .device/bin   # + .device/bintxz, .device/train
set -eu
SRC=${1:-build-gpu}
DST=${2:-.device/bin}
mkdir -p "$DST"
for b in vitengine vitengine_gpu_tests bench_ops_cuda bench_e2e_cuda bench_attention; do
  if [ -x "$SRC/$b" ]; then cp "$SRC/$b" "$DST/"; else echo "note: $SRC/$b not built"; fi
done
for b in "$DST"/*; do
  [ -x "$b" ] || continue
  ldd "$b" | awk '/=> \// {print $3}' | grep -E 'libbenchmark|libgomp|libzip|libcpp-httplib|libbrotli|libbz2' || true
done | sort -u | while read -r lib; do cp -L "$lib" "$DST/"; done
strip "$DST"/vitengine* "$DST"/bench_* 2>/dev/null || true
# The commit the binaries come from (the GPU machine's checkout may carry another HEAD).
echo "$(git rev-parse HEAD)$(git diff --quiet HEAD -- . ':!weights/shipped' || echo -dirty)" > "$DST/COMMIT"
du -sh "$DST"; ls -la "$DST"

# For tools/gpu_session.sh: the same folder as one tar.xz (stage 1 carries it beside a 50 MiB
# shard), and, with PREPARED=<prepared wbc14 folder>, the training bundle stage 3 carries:
# the CLI gzipped, its libraries, the split (manifest gzipped, report) and the reference script.
PARENT=$(dirname "$DST")
mkdir -p "$PARENT/bintxz"
tar -cJf "$PARENT/bintxz/bin.tar.xz" -C "$PARENT" "$(basename "$DST")"
ls -la "$PARENT/bintxz"
if [ -n "${PREPARED:-}" ]; then
  T="$PARENT/train"
  rm -rf "$T" && mkdir -p "$T/lib" "$T/prepared-wbc14"
  gzip -9 -c "$DST/vitengine" > "$T/vitengine.gz"
  cp "$DST"/lib*.so* "$T/lib/"
  cp "$DST/COMMIT" "$T/"
  gzip -9 -c "$PREPARED/manifest.csv" > "$T/prepared-wbc14/manifest.csv.gz"
  cp "$PREPARED/report.json" "$T/prepared-wbc14/"
  cp "$(dirname "$0")/../../shared/reference/pytorch_reference.py" "$T/" 2>/dev/null ||
    echo "note: ../shared/reference/pytorch_reference.py not found; copy it into $T by hand"
  du -sh "$T"
fi
