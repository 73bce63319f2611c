#!/usr/bin/env bash
# A folder of anyone's images through the whole CLI with its own class names (any UTF-8):
# prepare --labels folders, train, eval, predict, serve, export --format timm; and what must be
# refused: differential on a non-cell model (exit 2), a failed start (no --out left behind), a
# resume that changes the recipe. Then the digits example's spelled commands, when scikit-learn
# is installed. Usage: any_dataset.sh VITENGINE SRC_DIR WORK_DIR
set -euo pipefail
BIN=$1 SRC=$2 W=$3
rm -rf "$W"; mkdir -p "$W"
fail() { echo "FAIL: $*" >&2; exit 1; }
jget() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))" "$@"; }

# Two classes told apart by brightness, 24 images each, 40x40 PNG (written with zlib alone).
python3 - "$W/imgs" <<'PY'
import os, random, struct, sys, zlib
def png(path, w, h, px):
    def chunk(k, d):
        c = k + d
        return struct.pack(">I", len(d)) + c + struct.pack(">I", zlib.crc32(c) & 0xFFFFFFFF)
    raw = b"".join(b"\x00" + bytes(px[y * w * 3:(y + 1) * w * 3]) for y in range(h))
    open(path, "wb").write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) +
                           chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
r = random.Random(1)
for cls, base in (("chats noirs", 50), ("Éclairs 光", 200)):
    os.makedirs(os.path.join(sys.argv[1], cls), exist_ok=True)
    for i in range(24):
        png(os.path.join(sys.argv[1], cls, "%02d.png" % i), 40, 40,
            [max(0, min(255, base + r.randint(-40, 40))) for _ in range(40 * 40 * 3)])
PY
"$BIN" prepare "$W/imgs" --out "$W/p" --labels folders --quiet > "$W/prepare.log"
[ "$(cat "$W/p/classes.txt")" = "$(printf 'chats noirs\nÉclairs 光')" ] || fail "classes.txt: $(cat "$W/p/classes.txt")"

# --print-config shows what was typed; a failed start leaves no --out.
"$BIN" train --config "$SRC/configs/quickstart.json" --lr 2.5e-6 --print-config > "$W/cfg.json"
[ "$(jget "$W/cfg.json" "d['lr']")" = "2.5e-06" ] || fail "--lr 2.5e-6 printed as $(jget "$W/cfg.json" "d['lr']")"
if "$BIN" train --config "$SRC/configs/quickstart.json" --data "$W/nowhere" --out "$W/failed" 2> "$W/failed.log"; then
  fail "train on a missing data set succeeded"
fi
[ ! -e "$W/failed" ] || fail "a failed start left $W/failed behind"

T="--config $SRC/configs/quickstart.json --set image_size=32 --set patch=8 --set batch_size=8 --set log_every=100"
"$BIN" train $T --data "$W/p" --out "$W/r" --epochs 1 > "$W/train1.log"
[ "$(jget "$W/r/config.json" "d['train']['rotate_flip']")" = "off" ] || fail "rotate_flip auto did not turn off for a folder set"
# --resume may extend the epochs, and nothing else.
"$BIN" train $T --data "$W/p" --out "$W/r" --epochs 2 --resume > "$W/train2.log"
grep -q "extends the run from 1 to 2 epochs" "$W/train2.log" || fail "resume did not extend the epochs"
if "$BIN" train $T --data "$W/p" --out "$W/r" --epochs 3 --resume --set weight_decay=0.5 > "$W/train3.log" 2>&1; then
  fail "resume with another weight_decay was accepted"
fi
grep -q "weight_decay" "$W/train3.log" || fail "the refused resume does not name weight_decay"

"$BIN" eval --model "$W/r/best.vit" --data "$W/p/manifest.csv" --split test --out "$W/e" > "$W/eval.log"
python3 -c "import json,sys; m=json.load(open(sys.argv[1])); assert 0 <= m['accuracy'] <= 1; assert set(m['per_class']) == {'chats noirs', 'Éclairs 光'}, m['per_class'].keys()" "$W/e/metrics.json" \
  || fail "eval metrics.json lacks accuracy or the class names"
"$BIN" predict --model "$W/r/best.vit" "$W/imgs/Éclairs 光/00.png" --format json > "$W/pred.json"
grep -q "Éclairs 光" "$W/pred.json" || fail "predict does not name the model's own classes: $(head -c 300 "$W/pred.json")"
grep -q '"description"' "$W/pred.json" && fail "predict shows clinical notes for a non-cell model"

# serve: the page's class list and a prediction name the model's own classes, with no notes.
"$BIN" serve --model "$W/r/best.vit" --port 0 > "$W/serve.log" 2>&1 &
spid=$!
for _ in $(seq 100); do grep -q "listening on" "$W/serve.log" && break; sleep 0.1; done
port=$(sed -n 's|.*listening on http://127.0.0.1:\([0-9]*\)/.*|\1|p' "$W/serve.log")
python3 - "$port" "$W/imgs/chats noirs/01.png" <<'PY' || { kill $spid; fail "serve: $(cat "$W/serve.log")"; }
import json, sys, urllib.request, uuid
base = "http://127.0.0.1:%s" % sys.argv[1]
classes = json.load(urllib.request.urlopen(base + "/v1/classes"))["classes"]
assert [c["name"] for c in classes] == ["chats noirs", "Éclairs 光"], classes
assert not any("description" in c for c in classes), classes
b = uuid.uuid4().hex
body = (("--%s\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n"
         "Content-Type: image/png\r\n\r\n" % b).encode() + open(sys.argv[2], "rb").read() + ("\r\n--%s--\r\n" % b).encode())
req = urllib.request.Request(base + "/v1/predict", data=body,
                             headers={"Content-Type": "multipart/form-data; boundary=" + b})
r = json.load(urllib.request.urlopen(req))["results"][0]
assert r["prediction"] in ("chats noirs", "Éclairs 光"), r
assert not r.get("notes"), r
PY
kill $spid; wait $spid 2> /dev/null || true

# Stain normalisation: stain-ref adds the training images' reference and keeps the weights bit for
# bit (the exports are byte-identical); --stain-norm needs it and says how to add it.
if "$BIN" predict --model "$W/r/best.vit" "$W/imgs/chats noirs/01.png" --stain-norm reinhard > "$W/sn.log" 2>&1; then
  fail "--stain-norm on a model without a stain reference was accepted"
fi
grep -q "stain-ref" "$W/sn.log" || fail "the refusal does not say how to add a reference: $(cat "$W/sn.log")"
"$BIN" stain-ref --model "$W/r/best.vit" --data "$W/p" --out "$W/rs.vit" --images 20 > /dev/null
"$BIN" export "$W/r/best.vit" --out "$W/a.safetensors" > /dev/null
"$BIN" export "$W/rs.vit" --out "$W/b.safetensors" > /dev/null
cmp -s "$W/a.safetensors" "$W/b.safetensors" || fail "stain-ref changed the weights"
for m in reinhard macenko; do
  "$BIN" predict --model "$W/rs.vit" "$W/imgs/chats noirs/01.png" --stain-norm $m --format json > "$W/sn_$m.json" \
    || fail "predict --stain-norm $m"
done

# A checkpoint written before the class list became data (the shipped model) still loads and names
# the taxonomy's classes.
"$BIN" predict --model "$SRC/weights/shipped/model.vit" "$SRC/tests/fixtures/quickstart/images/SNE_101188.jpg" \
  --format json > "$W/shipped.json"
grep -q "Segmented Neutrophil" "$W/shipped.json" || fail "the shipped model: $(head -c 300 "$W/shipped.json")"

# differential: a sentence and exit 2 on a model that is not a cell model.
set +e
"$BIN" differential "$W/imgs/chats noirs" --model "$W/r/best.vit" --out "$W/d.html" 2> "$W/diff.log"
rc=$?
set -e
[ $rc -eq 2 ] || fail "differential on a non-cell model exited $rc, not 2"
grep -q "not the white-blood-cell taxonomy" "$W/diff.log" || fail "differential did not say why: $(cat "$W/diff.log")"

# export --format timm writes timm's keys.
"$BIN" export "$W/r/best.vit" --out "$W/m.safetensors" --format timm > /dev/null
python3 - "$W/m.safetensors" <<'PY' || fail "export --format timm"
import json, struct, sys
b = open(sys.argv[1], "rb").read()
h = json.loads(b[8:8 + struct.unpack("<Q", b[:8])[0]])
keys = set(h) - {"__metadata__"}
assert {"cls_token", "pos_embed", "patch_embed.proj.weight", "blocks.0.attn.qkv.weight", "norm.weight",
        "head.weight"} <= keys, sorted(keys)[:8]
assert json.loads(h["__metadata__"]["class_names"]) == ["chats noirs", "Éclairs 光"]
PY

# The digits example, as the README spells it (two epochs here; the full run is tools/digits_peer.py).
SKPY=""
for py in python3 /usr/bin/python3; do "$py" -c "import sklearn" 2> /dev/null && SKPY=$py && break; done
if [ -n "$SKPY" ]; then
  "$SKPY" "$SRC/tools/make_digits.py" "$W/digits" > /dev/null
  "$BIN" prepare "$W/digits" --out "$W/dp" --labels folders --quiet > /dev/null
  "$BIN" train --config "$SRC/configs/digits.json" --data "$W/dp" --out "$W/dr" --epochs 2 > /dev/null
  [ -f "$W/dr/best.vit" ] || fail "digits: no best.vit"
  "$BIN" eval --model "$W/dr/best.vit" --data "$W/dp/manifest.csv" --split test --out "$W/de" > /dev/null
  [ "$(jget "$W/de/metrics.json" "d['n']")" -gt 300 ] || fail "digits: eval saw too few test images"
else
  echo "any_dataset: scikit-learn missing: the digits commands were not run"
fi
echo "any_dataset: ok"
