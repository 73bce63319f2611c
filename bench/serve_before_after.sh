#!/usr/bin/env bash
# `vitengine serve` on this machine with the shipped model and 8 clients: an older binary (BEFORE)
# and this one (AFTER), alternating, ROUNDS rounds of DURATION seconds each (tools/loadtest.py).
# Writes bench/results/<date>-cpu-serve-8clients.json.
#   BEFORE=/path/to/old/vitengine bench/serve_before_after.sh
# Build the old binary from a worktree, e.g. git worktree add ../old 436484e && cmake -S ../old
# -B ../old/build -DCMAKE_BUILD_TYPE=Release -DVITENGINE_BUILD_TESTS=OFF && cmake --build
# ../old/build --target vitengine.
set -euo pipefail
cd "$(dirname "$0")/.."
BEFORE=${BEFORE:?set BEFORE to the older vitengine binary}
AFTER=${AFTER:-build/vitengine}
ROUNDS=${ROUNDS:-2}
DURATION=${DURATION:-45}
CLIENTS=${CLIENTS:-8}
IMAGES=${IMAGES:-tests/fixtures/quickstart/images}
MODEL=${MODEL:-weights/shipped/model.vit}
OUTDIR=${OUTDIR:-bench/results}
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$tmp"' EXIT
imgs=()
for f in $(ls "$IMAGES" | awk "NR % 35 == 1" | head -8); do imgs+=(--image "$IMAGES/$f"); done
one() {  # one run: $1 label, $2 binary, $3 round
  local port=$((18600 + RANDOM % 400))
  "$2" serve --model "$MODEL" --port "$port" >"$tmp/serve.log" 2>&1 &
  local pid=$!
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.2; done
  echo "{\"label\": \"$1\", \"round\": $3, \"load_before\": \"$(cut -d' ' -f1-3 /proc/loadavg)\", \"result\": " >"$tmp/$1_$3.json"
  python3 tools/loadtest.py --url "http://127.0.0.1:$port" "${imgs[@]}" --clients "$CLIENTS" --duration "$DURATION" \
    --requests 10000 --warmup 8 >>"$tmp/$1_$3.json" || true  # errors are in the JSON
  echo ", \"rss_kb\": $(awk '/VmRSS/{print $2}' /proc/$pid/status)}" >>"$tmp/$1_$3.json"
  kill "$pid"; wait "$pid" 2>/dev/null || true
  echo "$1 round $3 done" >&2
}
for r in $(seq 1 "$ROUNDS"); do
  one before "$BEFORE" "$r"
  one after "$AFTER" "$r"
done
python3 - "$tmp" "$ROUNDS" "$OUTDIR" "$(git rev-parse --short HEAD)" "$CLIENTS" "$DURATION" <<'PY'
import json, sys, os, datetime, platform, glob
tmp, rounds, outdir, commit, clients, duration = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5]), int(sys.argv[6])
runs = [json.load(open(f)) for f in sorted(glob.glob(f"{tmp}/*.json"))]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
out = {"date": datetime.date.today().isoformat(), "commit_after": commit, "cpu": cpu, "cpus": os.cpu_count(),
       "clients": clients, "duration_s": duration, "runs": runs}
def col(label, key):
    v = []
    for r in runs:
        if r["label"] != label: continue
        lvl = r["result"][0]
        v.append(lvl["latency_ms"]["p99"] if key == "p99" else lvl[key])
    return v
summary = {}
for label in ("before", "after"):
    summary[label] = {"images_per_s": col(label, "req_per_s"), "p99_ms": col(label, "p99"), "errors": col(label, "errors")}
b, a = summary["before"]["images_per_s"], summary["after"]["images_per_s"]
summary["throughput_ratio_of_means"] = round((sum(a) / len(a)) / (sum(b) / len(b)), 3)
out["summary"] = summary
os.makedirs(outdir, exist_ok=True)
path = f"{outdir}/{out['date']}-cpu-serve-{clients}clients.json"
json.dump(out, open(path, "w"), indent=1)
print(json.dumps(summary, indent=1)); print("->", path)
PY
