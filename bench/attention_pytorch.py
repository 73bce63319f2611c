#!/usr/bin/env python3
"""PyTorch's scaled_dot_product_attention at the shape of bench/bench_attention.cu, for a side-by-side.

Shape: B=256, H=12, N=197, Dh=64, bf16, no mask (ViT-B/16 training). Times forward, backward and
forward+backward with CUDA events, flushing the L2 (a buffer twice its size is zeroed) before each
repeat, and prints one JSON document (also written to --out if given).

FLOP convention (same as bench_attention): fwd = 4*B*H*N^2*Dh, bwd = 2.5x fwd, fwd+bwd = 3.5x fwd.

Rows: the default dispatch on contiguous (B, H, N, Dh) tensors (the kernel-vs-kernel number), the
default dispatch on the views a ViT gets from its fused qkv (B, N, 3, H, Dh) -> 3 x (B, H, N, Dh)
(strided, as in timm), and each backend forced in turn (flash, efficient, cudnn) where it runs.

Run on the GPU machine:  /opt/torch/.venv/bin/python bench/attention_pytorch.py [--out sdpa.json]
"""
import argparse
import contextlib
import json
import statistics
import sys

import torch
import torch.nn.functional as F


def time_ms(fn, flush, iters, warmup):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    start = torch.cuda.Event(enable_timing=True)
    stop = torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(iters):
        flush.zero_()
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop))
    return times


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--seq", type=int, default=197)
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--iters", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--out", help="also write the JSON here")
    args = ap.parse_args()

    if not torch.cuda.is_available():
        print(json.dumps({"skipped": "no CUDA device"}))
        return 0

    B, H, N, Dh = args.batch, args.heads, args.seq, args.head_dim
    dev = torch.device("cuda")
    props = torch.cuda.get_device_properties(0)
    flush = torch.empty(2 * props.L2_cache_size, dtype=torch.uint8, device=dev)
    fwd_flops = 4.0 * B * H * N * N * Dh
    flops = {"fwd": fwd_flops, "bwd": 2.5 * fwd_flops, "fwd+bwd": 3.5 * fwd_flops}

    torch.manual_seed(0)
    # contiguous (B, H, N, Dh)
    qc, kc, vc = (torch.randn(B, H, N, Dh, device=dev, dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    # ViT layout: qkv (B, N, 3*D) -> (B, N, 3, H, Dh) -> 3 x (B, H, N, Dh) strided views
    qkv = torch.randn(B, N, 3 * H * Dh, device=dev, dtype=torch.bfloat16, requires_grad=True)

    def vit_views():
        q, k, v = qkv.view(B, N, 3, H, Dh).permute(2, 0, 3, 1, 4).unbind(0)
        return q, k, v

    dout = torch.randn(B, H, N, Dh, device=dev, dtype=torch.bfloat16)

    from torch.nn.attention import SDPBackend, sdpa_kernel

    backends = [("default", None), ("flash", SDPBackend.FLASH_ATTENTION),
                ("efficient", SDPBackend.EFFICIENT_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION)]
    results = []
    for layout in ("contiguous", "vit_qkv_views"):
        for bname, backend in backends:
            if layout == "vit_qkv_views" and bname != "default":
                continue

            def inputs():
                return (qc, kc, vc) if layout == "contiguous" else vit_views()

            def run_fwd():
                with torch.no_grad():
                    F.scaled_dot_product_attention(*inputs())

            def run_fwdbwd():
                q, k, v = inputs()
                o = F.scaled_dot_product_attention(q, k, v)
                torch.autograd.grad(o, (q, k, v) if layout == "contiguous" else (qkv,), dout)

            q, k, v = inputs()
            o_saved = F.scaled_dot_product_attention(q, k, v) if backend is None else None

            def run_bwd():
                torch.autograd.grad(o_saved, (q, k, v) if layout == "contiguous" else (qkv,), dout,
                                    retain_graph=True)

            try:
                with sdpa_kernel(backend) if backend is not None else contextlib.nullcontext():
                    if o_saved is None:
                        o_saved = F.scaled_dot_product_attention(q, k, v)
                    timed = {"fwd": time_ms(run_fwd, flush, args.iters, args.warmup),
                             "bwd": time_ms(run_bwd, flush, args.iters, args.warmup),
                             "fwd+bwd": time_ms(run_fwdbwd, flush, args.iters, args.warmup)}
            except RuntimeError as e:  # backend not available for this shape / card
                results.append({"backend": bname, "layout": layout, "error": str(e).splitlines()[0][:200]})
                continue
            for what, ts in timed.items():
                med = statistics.median(ts)
                results.append({"name": f"sdpa_{what}", "backend": bname, "layout": layout,
                                "ms_median": round(med, 4), "ms_mean": round(statistics.fmean(ts), 4),
                                "tflops": round(flops[what] / (med * 1e-3) / 1e12, 1)})
            del o_saved

    doc = {"card": props.name, "torch": torch.__version__, "cuda": torch.version.cuda,
           "shape": {"B": B, "H": H, "N": N, "Dh": Dh, "dtype": "bf16"},
           "flop_convention": "fwd 4*B*H*N^2*Dh, bwd 2.5x fwd, fwd+bwd 3.5x fwd; TFLOP/s from the median",
           "l2_flushed": True, "iters": args.iters, "results": results}
    text = json.dumps(doc, indent=1)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
