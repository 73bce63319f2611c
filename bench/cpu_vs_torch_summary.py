#!/usr/bin/python3
"""Summarises bench/cpu_vs_torch.sh's rounds into bench/results/<date>-cpu-vit_ti16.json and a
table on stdout. Args: tmpdir rounds threads outdir commit. Speed ratio = PyTorch ms / vitengine
ms (above 1: vitengine is faster). GFLOP/s counts the forward's GEMM and attention products (as
bench_cpu's forward_flops); the training step counts 3 x the forward. Peak: cores x FLOP/cycle x
the base clock read from /proc/cpuinfo (BogoMIPS / 2 where no MHz is reported), an estimate:
fp32 AVX-512 with two FMA units = 64 FLOP/cycle/core; AMX bf16 = 1024 FLOP/cycle/core."""
import datetime, json, os, platform, re, statistics, sys

tmp, rounds, threads, outdir, commit = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]


def vit_ti16_flops():
    N, D, M, K, depth, Np, C = 197, 192, 768, 768, 12, 196, 14
    block = N * D * 3 * D + 2 * N * N * D + N * D * D + 2 * N * D * M
    return 2 * (Np * K * D + depth * block + D * C)


cpuinfo = open('/proc/cpuinfo').read()
model = re.search(r'model name\s*:\s*(.*)', cpuinfo).group(1)
flags = set(re.search(r'flags\s*:\s*(.*)', cpuinfo).group(1).split())
mhz = float(re.search(r'cpu MHz\s*:\s*([\d.]+)', cpuinfo).group(1))
ghz = mhz / 1000
avx512 = 'avx512f' in flags
peak_fp32 = threads * (64 if avx512 else 32) * ghz
peak_bf16 = threads * 1024 * ghz if 'amx_bf16' in flags else None

ours_names = {'fwd_b1_fp32': 'BM_Forward/vit_ti16/1/1/', 'fwd_b8_fp32': 'BM_Forward/vit_ti16/8/1/',
              'fwd_b1_bf16': 'BM_Forward/vit_ti16/1/2/', 'fwd_b8_bf16': 'BM_Forward/vit_ti16/8/2/',
              'fwd_b1_reference_path': 'BM_Forward/vit_ti16/1/0/', 'fwd_b8_reference_path': 'BM_Forward/vit_ti16/8/0/',
              'step_b8_fp32': 'BM_Step/vit_ti16/8/'}
torch_keys = {'fwd_b1_fp32': 'fwd_b1_ms', 'fwd_b8_fp32': 'fwd_b8_ms', 'fwd_b1_bf16': 'fwd_b1_bf16_ms',
              'fwd_b8_bf16': 'fwd_b8_bf16_ms', 'fwd_b1_reference_path': 'fwd_b1_ms',
              'fwd_b8_reference_path': 'fwd_b8_ms', 'step_b8_fp32': 'step_b8_ms'}
runs, torch_version, torch_cfg = [], None, {}
for r in range(1, rounds + 1):
    ours = {}
    for b in json.load(open(f'{tmp}/ours_{r}.json'))['benchmarks']:
        if b.get('error_occurred'):
            continue
        for k, prefix in ours_names.items():
            if b['name'].startswith(prefix):
                ours[k] = b['real_time'] * {'ms': 1, 'us': 1e-3, 'ns': 1e-6, 's': 1e3}[b['time_unit']]
    t = json.loads(open(f'{tmp}/torch_{r}.json').read().strip().splitlines()[-1])
    torch_version = t['torch']
    torch_cfg = {'mkl': t.get('mkl'), 'mkldnn': t.get('mkldnn')}
    runs.append({'round': r, 'load_before_ours': open(f'{tmp}/load_ours_{r}').read().strip(),
                 'load_before_torch': open(f'{tmp}/load_torch_{r}').read().strip(), 'vitengine_ms': ours,
                 'torch_ms': {k: t[v] for k, v in torch_keys.items() if v in t}})

rows = {}
for k in ours_names:
    pairs = [(x['vitengine_ms'].get(k), x['torch_ms'].get(k)) for x in runs]
    pairs = [(o, p) for o, p in pairs if o and p]
    if not pairs:
        continue
    batch = 1 if '_b1' in k else 8
    flops = vit_ti16_flops() * batch * (3 if k.startswith('step') else 1)
    o_med, p_med = statistics.median(o for o, _ in pairs), statistics.median(p for _, p in pairs)
    peak = peak_bf16 if k.endswith('bf16') else peak_fp32
    rows[k] = {'vitengine_ms': [round(o, 3) for o, _ in pairs], 'torch_ms': [round(p, 3) for _, p in pairs],
               'ratio_per_round': [round(p / o, 3) for o, p in pairs], 'ratio_of_medians': round(p_med / o_med, 3),
               'vitengine_gflops': round(flops / o_med / 1e6, 1), 'torch_gflops': round(flops / p_med / 1e6, 1),
               'vitengine_share_of_peak': round(flops / o_med / 1e6 / peak, 3) if peak else None}

res = {'date': datetime.date.today().isoformat(), 'commit': commit, 'host': platform.node(), 'cpu': model,
       'cpu_flags': sorted(f for f in flags if f.startswith(('avx512f', 'avx512_bf16', 'amx', 'avx2', 'fma'))),
       'base_ghz': ghz, 'threads': threads, 'model': 'vit_ti16', 'image': 224,
       'peak_gflops_estimate': {'fp32_avx512': round(peak_fp32, 1), 'bf16_amx': round(peak_bf16, 1) if peak_bf16 else None},
       'peer': {'torch': torch_version, **torch_cfg, 'source': 'PyPI wheel (pip install torch torchvision)',
                'bf16': 'torch.autocast(cpu, bfloat16) under inference_mode'},
       'vitengine': {'bench': 'build/bench_cpu BM_Forward (mode 1 fp32 inference path, 2 bf16 on AMX, 0 the '
                              'reference forward that saves activations), BM_Step',
                     'flags': '-O3 -march=native -mtune=generic (VITENGINE_NATIVE), OpenMP, Eigen 3.4'},
       'ratio': 'torch ms / vitengine ms: above 1 means vitengine is faster',
       'results': rows, 'rounds': runs}
os.makedirs(outdir, exist_ok=True)
path = f"{outdir}/{res['date']}-cpu-vit_ti16.json"
with open(path, 'w') as f:
    json.dump(res, f, indent=1)
print(f'{model}, {threads} threads, torch {torch_version}; written {path}')
print(f"{'workload':24s} {'vitengine ms':>16s} {'torch ms':>16s} {'ratio':>14s} {'GFLOP/s':>8s}")
for k, v in rows.items():
    print(f"{k:24s} {'/'.join(map(str, v['vitengine_ms'])):>16s} {'/'.join(map(str, v['torch_ms'])):>16s} "
          f"{'/'.join(map(str, v['ratio_per_round'])):>14s} {v['vitengine_gflops']:>8}")
