#!/usr/bin/env bash
# One GPU lease in three calls (the upload limit is 64 MiB a call, the data set is three
# ~50 MiB shards), each call unpacking one shard into ~/data while it does its own work:
#   STAGE=1: carry .device/s2 + .device/bin   -> tools/gpu_check.sh (gpu tests, issue 6/7 checks,
#            benchmarks, PyTorch on the same card; NO_COMPILE=1 unless COMPILE=1)
#   STAGE=2: carry .device/s1                 -> unpack only
#   STAGE=3: carry .device/s3 + .device/train -> scripts/gpu_train.sh (vitengine trains the shipped
#            recipe, then the PyTorch reference recipe on the same split and card), then the
#            trained model exported to torchvision and scored by PyTorch on the test split
# Machine state (~/data, .device/bin) survives between calls only while the machine stays warm
# (30 s), so the three calls must follow each other at once.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/out}
mkdir -p ~/data "$OUT"
PY=${PY:-/opt/torch/.venv/bin/python}
unpack() {  # shard folder -> ~/data (in the background: the caller waits before using it)
  for f in "$1"/*.tar.gz; do [ -f "$f" ] && tar -xzf "$f" -C ~/data && echo "unpacked $(basename "$f")"; done
}
case "${STAGE:-1}" in
  1)
    unpack .device/s2 & U=$!
    NO_COMPILE=${NO_COMPILE:-$([ "${COMPILE:-0}" = 1 ] && echo 0 || echo 1)} BUILD=.device/bin OUT="$OUT" \
      bash tools/gpu_check.sh
    wait $U ;;
  2)
    unpack .device/s1
    ls ~/data/wbc14 | head; du -sh ~/data ;;
  3)
    unpack .device/s3
    echo "images: $(find ~/data/wbc14 -type f | wc -l)"
    OUT="$OUT" bash scripts/gpu_train.sh
    D=.device/train
    export LD_LIBRARY_PATH=$PWD/$D/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
    echo "== the trained model in PyTorch (issue 6): export -> torchvision -> test accuracy"
    $D/vitengine export /tmp/run_ship/best.vit --out /tmp/best.safetensors > /dev/null &&
      LD_LIBRARY_PATH= timeout 120 "$PY" tools/check_export_accuracy.py --safetensors /tmp/best.safetensors \
        --data $D/prepared-wbc14 --data-root ~/data/wbc14 --split test --device cuda --batch 256 \
        2>/dev/null | tee "$OUT/torch_export.json"
    rm -f "$OUT/log.txt"  # the reference's own copy of torch.log (at most 8 files come back)
    ls -la "$OUT" ;;
esac
