#!/usr/bin/python3
"""PyTorch CPU peer for bench/bench_cpu.cpp: forward+backward of torchvision-architecture
vit_ti16 (dim 192, 12 layers, 3 heads, MLP 768, 14 classes, dropout 0.1) at batch 8,
224x224, fp32, and forward latency at batch 1 / 8 in eval mode under inference_mode, in fp32 and
with bf16 autocast (oneDNN; --no-bf16 skips it). Prints one JSON line of ms per call.
    python3 bench/cpu_step_torch.py [--threads 2] [--seconds 5] [--no-bf16]
bench/cpu_vs_torch.sh runs it beside bench_cpu with the PyPI build of PyTorch.
"""
import argparse, json, time
import torch, torch.nn.functional as F, torchvision

ap = argparse.ArgumentParser()
ap.add_argument('--threads', type=int, default=2)
ap.add_argument('--seconds', type=float, default=5.0)
ap.add_argument('--no-bf16', action='store_true')
a = ap.parse_args()
torch.set_num_threads(a.threads)
m = torchvision.models.VisionTransformer(224, 16, 12, 3, 192, 768, dropout=0.1, num_classes=14)


def timeit(fn):
    fn(); fn()  # warm-up
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < a.seconds:
        fn(); n += 1
    return (time.perf_counter() - t0) / n * 1e3


x8 = torch.randn(8, 3, 224, 224); y8 = torch.arange(8) % 14
def step():
    m.train(); m.zero_grad(set_to_none=False)
    F.cross_entropy(m(x8), y8, label_smoothing=0.1).backward()
res = {'torch': torch.__version__, 'threads': a.threads, 'mkl': torch.backends.mkl.is_available(),
       'mkldnn': torch.backends.mkldnn.is_available(), 'step_b8_ms': timeit(step)}
m.eval()
x1 = torch.randn(1, 3, 224, 224)
with torch.inference_mode():
    res['fwd_b1_ms'] = timeit(lambda: m(x1))
    res['fwd_b8_ms'] = timeit(lambda: m(x8))
    if not a.no_bf16:
        with torch.autocast('cpu', dtype=torch.bfloat16):
            res['fwd_b1_bf16_ms'] = timeit(lambda: m(x1))
            res['fwd_b8_bf16_ms'] = timeit(lambda: m(x8))
print(json.dumps(res))
