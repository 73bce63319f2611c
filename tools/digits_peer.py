#!/usr/bin/env python3
"""The digits example's peer: scikit-learn's SVC (RBF kernel) on the very split `vitengine prepare`
made (its manifest.csv), from the original 8x8 arrays (the file names keep their index into
load_digits(); see tools/make_digits.py). gamma and C are chosen on the val split, as vitengine
picks its best.vit on val; the test split is scored once.

    python3 tools/digits_peer.py PREPARED/manifest.csv     # prints one JSON object
"""
import csv
import json
import os
import sys

from sklearn.datasets import load_digits
from sklearn.svm import SVC


def main():
    d = load_digits()
    X = d.data / 16.0
    rows = {"train": [], "val": [], "test": []}
    with open(sys.argv[1], newline="") as f:
        for r in csv.DictReader(f):
            idx = int(os.path.splitext(os.path.basename(r["path"]))[0].split("_")[1])
            if int(d.target[idx]) != int(r["label"]):
                sys.exit("%s: label %s, but load_digits() says %d" % (r["path"], r["label"], d.target[idx]))
            rows[r["split"]].append(idx)
    best = None
    for gamma in (0.01, 0.03, 0.1, 0.3):
        for C in (1.0, 3.0, 10.0):
            m = SVC(gamma=gamma, C=C).fit(X[rows["train"]], d.target[rows["train"]])
            acc = m.score(X[rows["val"]], d.target[rows["val"]])
            if best is None or acc > best[0]:
                best = (acc, gamma, C, m)
    val_acc, gamma, C, m = best
    test_acc = m.score(X[rows["test"]], d.target[rows["test"]])
    print(json.dumps({"model": "sklearn SVC rbf", "gamma": gamma, "C": C, "val_accuracy": val_acc,
                      "test_accuracy": test_acc, "n_train": len(rows["train"]), "n_test": len(rows["test"])}))


if __name__ == "__main__":
    main()
