#!/usr/bin/env bash
# The second example, end to end and timed: scikit-learn's handwritten digits as an ImageFolder,
# prepare --labels folders, train configs/digits.json on the CPU, evaluate on the test split, and
# scikit-learn's SVC on the same split as the peer. Writes bench/results/<date>-cpu-digits.json.
#   bash scripts/digits.sh [WORK_DIR]        (needs build/vitengine and python3-sklearn)
set -euo pipefail
cd "$(dirname "$0")/.."
W=${1:-runs/digits}
BIN=${VITENGINE:-build/vitengine}
PY=python3; python3 -c "import sklearn" 2> /dev/null || PY=/usr/bin/python3
rm -rf "$W"; mkdir -p "$W"
$PY tools/make_digits.py "$W/images"
t0=$(date +%s.%N)
"$BIN" prepare "$W/images" --out "$W/prepared" --labels folders --quiet
t1=$(date +%s.%N)
"$BIN" train --config configs/digits.json --data "$W/prepared" --out "$W/run"
t2=$(date +%s.%N)
"$BIN" eval --model "$W/run/best.vit" --data "$W/prepared/manifest.csv" --split test --out "$W/eval"
t3=$(date +%s.%N)
peer=$($PY tools/digits_peer.py "$W/prepared/manifest.csv")
out=bench/results/$(date -u +%Y-%m-%d)-cpu-digits.json
python3 - "$W" "$t0" "$t1" "$t2" "$t3" "$peer" "$out" <<'PY'
import json, os, platform, subprocess, sys
w, t0, t1, t2, t3, peer, out = sys.argv[1], *map(float, sys.argv[2:6]), json.loads(sys.argv[6]), sys.argv[7]
m = json.load(open(os.path.join(w, "eval", "metrics.json")))
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
r = {"what": "digits example: prepare + train + eval on the CPU, beside scikit-learn's SVC on the same split",
     "command": "bash scripts/digits.sh", "commit": commit, "cpu": cpu, "cores": os.cpu_count(),
     "load_before": open("/proc/loadavg").read().split()[0],
     "seconds": {"prepare": round(t1 - t0, 1), "train": round(t2 - t1, 1), "eval": round(t3 - t2, 1),
                 "total": round(t3 - t0, 1)},
     "vitengine": {"test_accuracy": m["accuracy"], "macro_f1": m["macro_f1"], "n_test": m["n"]},
     "peer": peer}
os.makedirs(os.path.dirname(out), exist_ok=True)
json.dump(r, open(out + ".tmp", "w"), indent=1)
os.replace(out + ".tmp", out)
print("digits: vitengine %.2f%% test accuracy in %.0f s (prepare + train + eval); SVC %.2f%% -> %s" %
      (100 * m["accuracy"], t3 - t0, 100 * peer["test_accuracy"], out))
PY
