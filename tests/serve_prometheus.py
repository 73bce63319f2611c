#!/usr/bin/env python3
"""Reads a live `vitengine serve`'s /metrics with Prometheus' own text parser (prometheus_client,
Debian python3-prometheus-client or PyPI) and checks what an operator's scrape relies on.

    serve_prometheus.py --url http://127.0.0.1:PORT --predicts N

Exit 0: PASS; 1: a check failed (printed); 77: prometheus_client is not installed (skip).
"""
import argparse
import sys
import urllib.request

try:
    from prometheus_client.parser import text_string_to_metric_families
except ImportError:
    print("SKIP: python module prometheus_client missing")
    sys.exit(77)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--predicts", type=int, required=True, help="successful POST /v1/predict made before")
    a = ap.parse_args()
    r = urllib.request.urlopen(a.url + "/metrics")
    ctype = r.headers.get("Content-Type", "")
    text = r.read().decode()
    fams = {f.name: f for f in text_string_to_metric_families(text)}  # raises on malformed text
    bad = []

    def need(name, typ):
        f = fams.get(name)
        if f is None or f.type != typ:
            bad.append("%s: want a %s, got %s" % (name, typ, f.type if f else "nothing"))
        return f

    if not ctype.startswith("text/plain"):
        bad.append("Content-Type %r, not text/plain" % ctype)
    req = need("vitengine_http_requests", "counter")
    if req:
        ok = sum(s.value for s in req.samples if s.name.endswith("_total") and s.labels.get("route") == "/v1/predict"
                 and s.labels.get("status") == "200")
        if ok < a.predicts:
            bad.append("requests_total for POST /v1/predict 200 is %s, want >= %d" % (ok, a.predicts))
    hist = need("vitengine_http_request_duration_seconds", "histogram")
    if hist:
        routes = {s.labels.get("route") for s in hist.samples}
        if "/v1/predict" not in routes or "/healthz" not in routes:
            bad.append("latency histogram routes %s lack /v1/predict or /healthz" % sorted(routes))
        for route in routes:
            b = [(s.labels["le"], s.value) for s in hist.samples if s.name.endswith("_bucket") and s.labels["route"] == route]
            vals = [v for _, v in b]
            if vals != sorted(vals) or b[-1][0] != "+Inf":
                bad.append("%s: buckets not cumulative or no +Inf: %s" % (route, b))
            count = [s.value for s in hist.samples if s.name.endswith("_count") and s.labels["route"] == route]
            if not count or count[0] != vals[-1]:
                bad.append("%s: _count %s != +Inf bucket %s" % (route, count, vals[-1]))
    bs = need("vitengine_batch_size", "histogram")
    if bs:
        n = [s.value for s in bs.samples if s.name == "vitengine_batch_size_count"]
        if not n or n[0] < 1:
            bad.append("no forward pass counted in vitengine_batch_size")
    need("vitengine_queue_depth", "gauge")
    need("vitengine_images_per_second", "gauge")
    img = need("vitengine_images_predicted", "counter")
    if img and sum(s.value for s in img.samples) < a.predicts:
        bad.append("images_predicted_total below the predictions made")
    info = need("vitengine_model_info", "gauge")
    if info and not any(s.labels.get("model") for s in info.samples):
        bad.append("model_info has no model label")
    if bad:
        print("FAIL\n" + "\n".join(bad) + "\n--- /metrics ---\n" + text)
        sys.exit(1)
    print("PASS: %d metric families parsed" % len(fams))


if __name__ == "__main__":
    main()
