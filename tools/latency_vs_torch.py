#!/usr/bin/env python3
"""Single-image CPU latency: vitengine against PyTorch running the same architecture
on the same machine, as a ratio.

vitengine: `vitengine predict --model CKPT --time-runs N IMAGE` times the forward pass
of one preprocessed image N times (after one warm-up) and prints the median and the
model's config. PyTorch: torchvision.models.VisionTransformer built from that config
(random weights: the time does not depend on the values), eval mode, no_grad, the
same thread count, N timed runs after warm-up. Preprocessing is excluded from both.

  /usr/bin/python3 tools/latency_vs_torch.py --binary build/vitengine --model M.vit --image cell.jpg [--runs 30]

Without --model, --preset (vit_ti16 | vit_s16 | vit_b16) builds a torchvision ViT with
random weights (seed 0), saves it with torch.save and imports it with
`vitengine convert`, so both engines run the very same weights; --save-model keeps
that .vit (the load test in docs/serving.md used it).
"""
import argparse, datetime, json, os, platform, re, statistics, subprocess, sys, time


def cpu_name():
    try:
        for line in open('/proc/cpuinfo'):
            if line.startswith('model name'):
                return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or 'unknown CPU'


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--binary', required=True)
    ap.add_argument('--model', help='vitengine checkpoint; default: a random --preset model')
    ap.add_argument('--preset', default='vit_ti16', choices=['vit_ti16', 'vit_s16', 'vit_b16'])
    ap.add_argument('--save-model', help='keep the random --preset model here (.vit)')
    ap.add_argument('--image', required=True)
    ap.add_argument('--runs', type=int, default=30)
    ap.add_argument('--threads', type=int, default=os.cpu_count())
    ap.add_argument('--rounds', type=int, default=3, help='alternate the two engines this many times; report the best median of each')
    a = ap.parse_args()

    import torch
    import torchvision
    torch.set_num_threads(a.threads)
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads))

    if not a.model:
        import tempfile
        dim, heads = {'vit_ti16': (192, 3), 'vit_s16': (384, 6), 'vit_b16': (768, 12)}[a.preset]
        torch.manual_seed(0)
        tv = torchvision.models.VisionTransformer(image_size=224, patch_size=16, num_layers=12, num_heads=heads,
                                                  hidden_dim=dim, mlp_dim=4 * dim, num_classes=14)
        torch.nn.init.normal_(tv.heads.head.weight, std=0.02)  # torchvision zero-inits the head
        tmp = tempfile.mkdtemp(prefix='vitengine_latency_')
        pth = os.path.join(tmp, a.preset + '.pth')
        torch.save(tv.state_dict(), pth)
        a.model = a.save_model or os.path.join(tmp, a.preset + '.vit')
        p = subprocess.run([a.binary, 'convert', pth, '--out', a.model, '--heads', str(heads)],
                           capture_output=True, text=True)
        if p.returncode != 0:
            sys.exit('vitengine convert failed: ' + p.stderr)

    def vitengine_once():
        p = subprocess.run([a.binary, 'predict', '--model', a.model, '--time-runs', str(a.runs), a.image],
                           capture_output=True, text=True, env=env)
        m = re.search(r'timing (\{.*\})', p.stderr)
        if p.returncode != 0 or not m:
            sys.exit('vitengine failed: ' + p.stderr)
        return json.loads(m.group(1))

    first = vitengine_once()
    c = first['config']
    model = torchvision.models.VisionTransformer(
        image_size=c['image_size'], patch_size=c['patch'], num_layers=c['depth'], num_heads=c['heads'],
        hidden_dim=c['dim'], mlp_dim=c['mlp_dim'], num_classes=c['num_classes']).eval()
    x = torch.randn(1, 3, c['image_size'], c['image_size'])

    def torch_once():
        with torch.inference_mode():
            for _ in range(3):
                model(x)
            ms = []
            for _ in range(a.runs):
                t0 = time.perf_counter()
                model(x)
                ms.append((time.perf_counter() - t0) * 1000)
        return statistics.median(ms)

    ve, pt = [first['forward_latency']['median_ms']], []
    for r in range(a.rounds):
        pt.append(torch_once())
        if r + 1 < a.rounds:
            ve.append(vitengine_once()['forward_latency']['median_ms'])
    res = {
        'date_utc': datetime.datetime.utcnow().strftime('%Y-%m-%d %H:%M'),
        'machine': f'{cpu_name()}, {os.cpu_count()} logical CPUs, load average {os.getloadavg()[0]:.1f} at start',
        'threads': a.threads, 'runs_per_round': a.runs, 'rounds': a.rounds,
        'config': c, 'torch': torch.__version__, 'torchvision': torchvision.__version__,
        'vitengine_median_ms': round(min(ve), 2), 'torch_median_ms': round(min(pt), 2),
        'vitengine_rounds_ms': [round(v, 2) for v in ve], 'torch_rounds_ms': [round(v, 2) for v in pt],
    }
    res['ratio_vitengine_over_torch'] = round(res['vitengine_median_ms'] / res['torch_median_ms'], 3)
    print(json.dumps(res, indent=1))
    return 0


if __name__ == '__main__':
    sys.exit(main())
