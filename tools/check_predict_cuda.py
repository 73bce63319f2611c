#!/usr/bin/env python3
"""GPU-machine check of `vitengine predict --device cuda`: the same images through
the CPU and the CUDA path of one binary, with an unreadable file in the list, must give the
same top-1 class for every image, probabilities within 1e-3 (both paths run fp32; only the
summation order differs), and an error line for the bad file while the rest still run.

    python3 tools/check_predict_cuda.py --vitengine BIN [--model weights/shipped/model.vit] IMAGE|DIR...
Exit status 0 when everything agrees.
"""
import argparse, json, subprocess, sys, tempfile, os, time

ap = argparse.ArgumentParser()
ap.add_argument('--vitengine', required=True)
ap.add_argument('--model', default='weights/shipped/model.vit')
ap.add_argument('inputs', nargs='+')
a = ap.parse_args()

bad = os.path.join(tempfile.mkdtemp(), 'truncated.jpg')
with open(bad, 'wb') as f:
    f.write(b'\xff\xd8\xff\xe0' + b'\0' * 20)  # a JPEG signature and nothing behind it


def run(device):
    t = time.time()
    r = subprocess.run([a.vitengine, 'predict', '--model', a.model, '--device', device, '--format', 'json',
                        '--batch', '32', *a.inputs, bad], capture_output=True, text=True)
    rows = [json.loads(l) for l in r.stdout.splitlines() if l.startswith('{')]
    print(f'{device}: rc {r.returncode}, {len(rows)} lines in {time.time() - t:.2f} s', flush=True)
    if r.stderr.strip():
        print('  stderr: ' + r.stderr.strip().splitlines()[-1][:300])
    return {row['file']: row for row in rows}


cpu, gpu = run('cpu'), run('cuda')
ok = True
if set(cpu) != set(gpu):
    print('different files answered:', sorted(set(cpu) ^ set(gpu))); ok = False
errors = [f for f, r in gpu.items() if 'error' in r]
if bad not in errors:
    print('the truncated file got no error line on cuda'); ok = False
worst, n = 0.0, 0
for f, g in gpu.items():
    if 'error' in g:
        continue
    c = cpu[f]; n += 1
    if c['prediction'] != g['prediction']:
        print(f'{f}: cpu {c["prediction"]} cuda {g["prediction"]}'); ok = False
    worst = max(worst, max(abs(c['probabilities'][k] - g['probabilities'][k]) for k in c['probabilities']))
print(f'{n} images: same top-1 on cpu and cuda: {ok}; max |p_cpu - p_cuda| = {worst:.2e}; '
      f'error lines on cuda: {len(errors)} ({", ".join(os.path.basename(e) for e in errors)})')
ok = ok and worst < 1e-3 and n > 0
print('PREDICT CUDA CHECK', 'PASS' if ok else 'FAIL')
sys.exit(0 if ok else 1)
