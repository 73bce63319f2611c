#!/usr/bin/env python3
"""Merge one GPU run's benchmark JSON files and print the vitengine / PyTorch ratio table.

    python3 tools/bench_table.py --ops ops.json --e2e e2e.json --attn attn.json \
        --pytorch pytorch.json --tests gpu_tests.json --commit <sha> --outdir bench/results

Inputs are Google Benchmark JSON (--benchmark_out_format=json) for the vitengine binaries and
bench/pytorch_bench.py's JSON; any of them may be missing (the table shows "-").
Writes <outdir>/<YYYY-MM-DD>-<card>.json (card name lower-cased, spaces -> '-') holding the commit,
the card, every input, and the summary rows; prints the rows as a Markdown table ready for
docs/performance.md. Standard library only.
"""
import argparse
import datetime
import json
import os
import re
import sys


def load(path):
    if not path or not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            return json.load(f)
    except Exception as e:  # a truncated file from a killed step
        print("warning: cannot read %s: %s" % (path, e), file=sys.stderr)
        return None


def gb_rows(doc):
    """Google Benchmark JSON -> list of benchmark dicts (errors kept, aggregates dropped)."""
    if not doc:
        return []
    return [b for b in doc.get("benchmarks", []) if b.get("run_type", "iteration") == "iteration"]


def find(rows, prefix, **args):
    """First benchmark whose name starts with prefix and contains every 'key:value' arg."""
    for b in rows:
        name = b.get("name", "")
        if not name.startswith(prefix):
            continue
        if all(("%s:%s" % (k, v)) in name.split("/") for k, v in args.items()):
            return b
    return None


def counter(b, key):
    if not b or b.get("error_occurred"):
        return None
    v = b.get(key)
    return float(v) if isinstance(v, (int, float)) else None


def fmt(v, unit=""):
    if v is None:
        return "-"
    if abs(v) >= 100:
        return "%.0f%s" % (v, unit)
    if abs(v) >= 10:
        return "%.1f%s" % (v, unit)
    return "%.2f%s" % (v, unit)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ops")
    ap.add_argument("--e2e")
    ap.add_argument("--attn", help="the attention benchmark's JSON (branch cuda-attn), optional")
    ap.add_argument("--pytorch")
    ap.add_argument("--tests", help="gtest --gtest_output=json file, optional")
    ap.add_argument("--commit", default="unknown")
    ap.add_argument("--card", default="")
    ap.add_argument("--outdir", default="bench/results")
    a = ap.parse_args()

    ops, e2e, attn, pt, tests = load(a.ops), load(a.e2e), load(a.attn), load(a.pytorch), load(a.tests)
    card = a.card or (pt or {}).get("card") or ((e2e or ops or {}).get("context", {}) or {}).get("card") or "unknown-card"
    P = (pt or {}).get("results", {})
    O, E, A = gb_rows(ops), gb_rows(e2e), gb_rows(attn)

    def best(*vals):
        vals = [v for v in vals if v is not None]
        return max(vals) if vals else None

    def mn(*vals):
        vals = [v for v in vals if v is not None]
        return min(vals) if vals else None

    tr_b16_e = counter(find(E, "BM_Train", model=0, graph=0, attn=0), "img/s")
    tr_b16_g = counter(find(E, "BM_Train", model=0, graph=1, attn=0), "img/s")
    tr_b16_c = counter(find(E, "BM_Train", model=0, graph=1, attn=1), "img/s")  # cuDNN attention
    mfu_b16 = {k: counter(find(E, "BM_Train", model=0, graph=g, attn=c), "MFU") for k, g, c in
               (("eager", 0, 0), ("graph", 1, 0), ("cudnn", 1, 1))}
    tr_s16_e = counter(find(E, "BM_Train", model=1, graph=0, attn=0), "img/s")
    tr_s16_g = counter(find(E, "BM_Train", model=1, graph=1, attn=0), "img/s")
    inf_e = counter(find(E, "BM_Infer", model=0, graph=0, attn=0), "img/s")
    inf_g = counter(find(E, "BM_Infer", model=0, graph=1, attn=0), "img/s")
    inf_c = counter(find(E, "BM_Infer", model=0, graph=1, attn=1), "img/s")
    lat_e = counter(find(E, "BM_Latency", model=0, graph=0, attn=0), "ms")
    lat_g = counter(find(E, "BM_Latency", model=0, graph=1, attn=0), "ms")
    ln = counter(find(O, "BM_LayerNormFwd"), "TB/s")
    gemm = counter(find(O, "BM_Gemm/6"), "TFLOP/s")

    rows = []  # (workload, vitengine, pytorch, ratio, target, unit)

    def row(name, ours, theirs, target, unit, lower_is_better=False):
        ratio = None
        if ours is not None and theirs:
            ratio = (theirs / ours) if lower_is_better else (ours / theirs)
        rows.append({"workload": name, "vitengine": ours, "pytorch": theirs, "ratio": ratio, "target": target,
                     "unit": unit})

    row("vit_b16 train b256 (best of eager, graph, cuDNN attention)", best(tr_b16_e, tr_b16_g, tr_b16_c),
        P.get("vit_b16_train_compile_img_s"), ">= 1.3x torch.compile", "img/s")
    row("vit_b16 train b256, cuDNN attention, graph", tr_b16_c, P.get("vit_b16_train_compile_img_s"),
        ">= 1.3x torch.compile", "img/s")
    row("vit_b16 train b256 vs eager PyTorch", best(tr_b16_e, tr_b16_g), P.get("vit_b16_train_eager_img_s"), "-",
        "img/s")
    row("vit_s16 train b256 vs timm eager", best(tr_s16_e, tr_s16_g), P.get("vit_s16_train_eager_img_s"), "-", "img/s")
    row("vit_b16 inference b256", best(inf_e, inf_g, inf_c), P.get("vit_b16_infer_b256_img_s"), "-", "img/s")
    row("vit_b16 inference b256 vs torch.compile", best(inf_e, inf_g, inf_c), P.get("vit_b16_infer_compile_b256_img_s"),
        ">= 1.3x torch.compile", "img/s")
    row("vit_b16 latency b1", mn(lat_e, lat_g), P.get("vit_b16_latency_b1_ms"), "< 2 ms", "ms", lower_is_better=True)
    row("LayerNorm fwd 50432x768 bf16", ln, P.get("layernorm_tbs") or P.get("layernorm_fwd_tbs"), ">= 2.5 TB/s",
        "TB/s")
    row("bf16 GEMM 8192^3 (cuBLASLt)", gemm, P.get("gemm_8192_tflops"), "-", "TFLOP/s")
    if A:
        for b in A:
            tf = counter(b, "TFLOP/s")
            if tf is None:
                continue
            nm = b.get("name", "").split("/")[0]
            if "fwdbwd" in nm:
                ref = P.get("sdpa_fwdbwd_tflops")
            elif "_fwd" in nm:
                ref = P.get("sdpa_fwd_tflops")
            else:
                ref = None  # backward alone: pytorch_bench.py times SDPA forward and forward+backward
            row("attention " + nm + " (B=256 H=12 N=197 D=64)", tf, ref, ">= SDPA", "TFLOP/s")

    test_summary = None
    if tests:
        test_summary = {k: tests.get(k) for k in ("tests", "failures", "disabled", "errors", "time")}
        skipped, failed = 0, []
        for suite in tests.get("testsuites", []):
            for t in suite.get("testsuite", []):
                if t.get("result") == "SKIPPED":
                    skipped += 1
                if t.get("failures"):
                    failed.append(suite.get("name", "?") + "." + t.get("name", "?"))
        test_summary["skipped"] = skipped
        test_summary["failed_tests"] = failed

    date = datetime.date.today().isoformat()
    slug = re.sub(r"[^a-z0-9]+", "-", card.lower()).strip("-") or "card"
    os.makedirs(a.outdir, exist_ok=True)
    path = os.path.join(a.outdir, "%s-%s.json" % (date, slug))
    doc = {"date": date, "card": card, "commit": a.commit, "summary": rows, "tests": test_summary, "mfu_vit_b16_train": mfu_b16,
           "vitengine_ops": ops, "vitengine_e2e": e2e, "vitengine_attention": attn, "pytorch": pt}
    with open(path, "w") as f:
        json.dump(doc, f, indent=1)

    print("card: %s   commit: %s   date: %s" % (card, a.commit, date))
    if test_summary:
        print("gpu tests: %s run, %s skipped, %s failures %s" % (test_summary.get("tests"), test_summary.get("skipped"),
                                                           test_summary.get("failures"),
                                                           " ".join(test_summary.get("failed_tests", []))))
    print()
    print("| workload | vitengine | PyTorch | ratio | target |")
    print("|---|---|---|---|---|")
    for r in rows:
        u = " " + r["unit"]
        print("| %s | %s | %s | %s | %s |" % (r["workload"], fmt(r["vitengine"], u), fmt(r["pytorch"], u),
                                              fmt(r["ratio"], "x"), r["target"]))
    print()
    print("extra: vit_b16 train eager %s / graph %s img/s; inference eager %s / graph %s img/s; "
          "latency eager %s / graph %s ms" % (fmt(tr_b16_e), fmt(tr_b16_g), fmt(inf_e), fmt(inf_g), fmt(lat_e),
                                              fmt(lat_g)))
    for b in O:
        nm = b.get("name", "").split("/iterations")[0]
        v = counter(b, "TB/s") if "TB/s" in b else counter(b, "TFLOP/s")
        unit = "TB/s" if "TB/s" in b else "TFLOP/s"
        if b.get("error_occurred"):
            print("  %-34s ERROR %s" % (nm, b.get("error_message")))
        else:
            print("  %-34s %s %s (%s)  %s" % (nm, fmt(v), unit, fmt(counter(b, "of_peak")), b.get("label", "")))
    print("\nwrote", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
