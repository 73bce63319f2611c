#!/usr/bin/env bash
# Unpacks cudnn-frontend's headers (header-only C++; PyPI's nvidia-cudnn-frontend wheel ships them)
# into .whl/cudnn_frontend/include, where the build looks for them (kernels/CMakeLists.txt). Only
# the CUDA build's attention=cudnn needs them. Best effort: without pip or PyPI it says so and the
# build goes on without cuDNN attention.
set -uo pipefail
cd "$(dirname "$0")/.."
VERSION=${CUDNN_FRONTEND_VERSION:-1.32.0}
dest=.whl/cudnn_frontend
if [ -f "$dest/include/cudnn_frontend.h" ]; then exit 0; fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if ! python3 -m pip download --quiet --no-deps --dest "$tmp" "nvidia-cudnn-frontend==$VERSION" 2> "$tmp/err"; then
  echo "cudnn_frontend: could not download nvidia-cudnn-frontend $VERSION ($(tail -1 "$tmp/err")); building without attention=cudnn"
  exit 0
fi
mkdir -p "$dest"
python3 - "$tmp" "$dest" <<'PY'
import glob, sys, zipfile
whl = glob.glob(sys.argv[1] + "/*.whl")[0]
with zipfile.ZipFile(whl) as z:
    for n in z.namelist():
        if n.startswith("include/"):
            z.extract(n, sys.argv[2])
PY
echo "cudnn_frontend: headers of nvidia-cudnn-frontend $VERSION in $dest/include"
