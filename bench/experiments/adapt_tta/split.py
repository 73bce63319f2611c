"""Hold out 30% of each class of a prepared folder's train rows as 'val' (seed 0), for choosing
between settings on the adaptation cells only. Usage: split.py PREPARED/manifest.csv OUT/manifest.csv
An experiment (README.md); the rounding and shuffle are Python's, so the split is reproducible
with this file, not with `adapt --holdout` (which draws its own)."""
import collections
import csv
import random
import sys

rows = list(csv.DictReader(open(sys.argv[1])))
train = [r for r in rows if r["split"] == "train"]
by_class = collections.defaultdict(list)
for r in train:
    by_class[r["label"]].append(r)
rng = random.Random(0)
for label, cells in sorted(by_class.items()):
    cells.sort(key=lambda r: r["path"])
    rng.shuffle(cells)
    held = round(0.3 * len(cells)) if len(cells) > 1 else 0  # a lone cell stays to be adapted on
    for i, r in enumerate(cells):
        r["split"] = "val" if i < held else "train"
with open(sys.argv[2], "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
    w.writeheader()
    w.writerows(train)
print(collections.Counter((r["label"], r["split"]) for r in train))
