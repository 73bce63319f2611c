#!/usr/bin/env python3
"""PyTorch on the same card, the same workloads as bench_e2e_cuda / bench_ops_cuda.

Run on the GPU machine with /opt/torch/.venv/bin/python (PyTorch 2.11, torchvision 0.26, timm):
    python bench/pytorch_bench.py --out pytorch.json [--compile] [--iters 10]

Workloads (synthetic input on the device, bf16 autocast, AdamW step included, cuda-event timing):
  vit_b16_train_eager / vit_b16_train_compile   torchvision vit_b_16, 14 classes, batch 256, img/s
  vit_b16_infer_b256 / vit_b16_infer_compile_b256  inference, batch 256, img/s (compiled with --compile)
  vit_b16_latency_b1_ms                         inference, batch 1, ms
  vit_s16_train_eager                           timm vit_small_patch16_224, batch 256, img/s
  sdpa_fwd_tflops / sdpa_fwdbwd_tflops          B=256 H=12 N=197 D=64 scaled_dot_product_attention
  layernorm_fwd_tbs                             50,432 x 768 bf16 LayerNorm forward
  gemm_8192_tflops                              bf16 8192^3 matmul (the card's practical ceiling)
Prints one JSON object (and writes it to --out). Total well under 3 minutes without --compile;
torch.compile adds about a minute.
"""
import argparse
import json
import math
import sys
import time


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="", help="write the JSON here too")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile training (slow to compile)")
    ap.add_argument("--iters", type=int, default=10, help="timed iterations per training workload")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--skip-timm", action="store_true")
    args = ap.parse_args()

    import torch
    import torch.nn.functional as F
    import torchvision

    if not torch.cuda.is_available():
        print(json.dumps({"skipped": "no CUDA device"}))
        return 0
    dev = torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    res = {
        "card": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "batch": args.batch,
        "results": {},
        "notes": {},
    }
    R = res["results"]

    def timed(fn, iters, warmup=3):
        for _ in range(warmup):
            fn()
        torch.cuda.synchronize()
        a = torch.cuda.Event(enable_timing=True)
        b = torch.cuda.Event(enable_timing=True)
        a.record()
        for _ in range(iters):
            fn()
        b.record()
        torch.cuda.synchronize()
        return a.elapsed_time(b) / 1e3 / iters  # seconds per iteration

    def safe(name, f):
        t0 = time.time()
        try:
            f()
        except Exception as e:  # keep going: one failing workload must not lose the others
            res["notes"][name] = "failed: %s: %s" % (type(e).__name__, e)
        print("# %s done in %.1f s" % (name, time.time() - t0), file=sys.stderr)
        torch.cuda.empty_cache()

    B = args.batch
    x = torch.randn(B, 3, 224, 224, device=dev)
    y = torch.randint(0, 14, (B,), device=dev)

    def train_step_fn(model, step_model=None):
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05, fused=True)
        m = step_model if step_model is not None else model  # a compiled Module has no bool()

        def step():
            opt.zero_grad(set_to_none=True)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = F.cross_entropy(m(x), y, label_smoothing=0.1)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()

        return step

    def vit_b16_train_eager():
        model = torchvision.models.vit_b_16(num_classes=14).to(dev).train()
        s = timed(train_step_fn(model), args.iters)
        R["vit_b16_train_eager_img_s"] = B / s

    def vit_b16_train_compile():
        model = torchvision.models.vit_b_16(num_classes=14).to(dev).train()
        cm = torch.compile(model)
        s = timed(train_step_fn(model, cm), args.iters, warmup=3)
        R["vit_b16_train_compile_img_s"] = B / s

    def vit_b16_infer():
        model = torchvision.models.vit_b_16(num_classes=14).to(dev).eval()
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
            s = timed(lambda: model(x), 20)
            R["vit_b16_infer_b256_img_s"] = B / s
            x1 = x[:1].contiguous()
            s1 = timed(lambda: model(x1), 50, warmup=10)
            R["vit_b16_latency_b1_ms"] = s1 * 1e3

    def vit_b16_infer_compile():
        # The compiled peer for inference (the target is a ratio to it, not only to eager).
        model = torchvision.models.vit_b_16(num_classes=14).to(dev).eval()
        cm = torch.compile(model)
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
            s = timed(lambda: cm(x), 20, warmup=3)
            R["vit_b16_infer_compile_b256_img_s"] = B / s

    def vit_s16_train():
        import timm
        model = timm.create_model("vit_small_patch16_224", num_classes=14).to(dev).train()
        s = timed(train_step_fn(model), args.iters)
        R["vit_s16_train_eager_img_s"] = B / s
        res["timm"] = timm.__version__

    def sdpa():
        Bq, H, N, D = 256, 12, 197, 64
        q, k, v = (torch.randn(Bq, H, N, D, device=dev, dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
        flops_f = 4 * Bq * H * N * N * D
        s = timed(lambda: F.scaled_dot_product_attention(q, k, v), 20)
        R["sdpa_fwd_tflops"] = flops_f / s / 1e12
        do = torch.randn_like(q)

        def fb():
            o = F.scaled_dot_product_attention(q, k, v)
            o.backward(do)

        s = timed(fb, 20)
        R["sdpa_fwdbwd_tflops"] = 3.5 * flops_f / s / 1e12  # fwd + bwd (2.5x fwd), the FlashAttention convention

    def layernorm():
        Rr, C = 256 * 197, 768
        t = torch.randn(Rr, C, device=dev, dtype=torch.bfloat16)
        ln = torch.nn.LayerNorm(C, eps=1e-6).to(dev).to(torch.bfloat16)
        with torch.inference_mode():
            s = timed(lambda: ln(t), 50)
        R["layernorm_fwd_tbs"] = 2 * Rr * C * 2 / s / 1e12

    def gemm():
        n = 8192
        a = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
        b = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
        s = timed(lambda: a @ b, 20)
        R["gemm_8192_tflops"] = 2 * n ** 3 / s / 1e12

    safe("gemm", gemm)
    safe("layernorm", layernorm)
    safe("sdpa", sdpa)
    safe("vit_b16_infer", vit_b16_infer)
    safe("vit_b16_train_eager", vit_b16_train_eager)
    if not args.skip_timm:
        safe("vit_s16_train", vit_s16_train)
    if args.compile:
        safe("vit_b16_train_compile", vit_b16_train_compile)
        safe("vit_b16_infer_compile", vit_b16_infer_compile)
    else:
        res["notes"]["vit_b16_train_compile"] = "not run (pass --compile)"
        res["notes"]["vit_b16_infer_compile"] = "not run (pass --compile)"
    res["notes"]["method"] = ("synthetic input on the device, bf16 autocast, fused AdamW + clip_grad_norm(1.0), "
                              "label smoothing 0.1, dropout 0 (torchvision/timm defaults), cuda events, "
                              "%d timed iterations after 3 warm-up" % args.iters)
    out = json.dumps(res, indent=2)
    print(out)
    if args.out:
        with open(args.out, "w") as f:
            f.write(out + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
