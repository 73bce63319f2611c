#!/usr/bin/python3
"""Runs a vitengine model, exported to torchvision safetensors, in PyTorch on a split of a
prepared data set, and prints the accuracy: the "export a trained model and confirm the same
test accuracy in PyTorch" check (docs/weights.md).

    build/vitengine export weights/shipped/model.vit --out /tmp/shipped.safetensors
    /usr/bin/python3 tools/check_export_accuracy.py --safetensors /tmp/shipped.safetensors \
        --data /work/data/prepared-wbc14 --data-root DATA/wbc14 --split test

Preprocessing is vitengine's for 224 px square inputs (the wbc14 JPEGs already are): pixel/255,
then the train-split mean/std from report.json. Images are decoded by PIL (vitengine uses
stb_image), so a handful of borderline predictions may differ.
"""
import argparse, csv, json, os, sys
import numpy as np
import torch
from PIL import Image
from torchvision.models.vision_transformer import VisionTransformer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from check_export_torchvision import load_safetensors  # noqa: E402

CLASSES = ["Band Neutrophil", "Basophil", "Eosinophil", "Erythroblast", "Immature Granulocyte", "Lymphocyte",
           "Metamyelocyte", "Monocyte", "Myeloblast", "Myelocyte", "Neutrophil", "Platelet", "Promyelocyte",
           "Segmented Neutrophil"]

ap = argparse.ArgumentParser()
ap.add_argument('--safetensors', required=True)
ap.add_argument('--data', required=True, help='prepared folder (manifest.csv + report.json)')
ap.add_argument('--data-root', default='')
ap.add_argument('--split', default='test')
ap.add_argument('--heads', type=int, default=3)
ap.add_argument('--batch', type=int, default=64)
ap.add_argument('--every', type=int, default=1, help='use every Nth image of the split (Debian PyTorch is slow)')
ap.add_argument('--preds', default='', help='write path,label,torch_pred CSV here')
ap.add_argument('--device', default='cpu', help='cpu or cuda (fp32 either way)')
a = ap.parse_args()
torch.set_num_threads(os.cpu_count())

sd, _ = load_safetensors(a.safetensors)
sd = {k: torch.from_numpy(np.ascontiguousarray(v)).float() for k, v in sd.items()}
D = sd['class_token'].shape[-1]; P = sd['conv_proj.weight'].shape[-1]
N = sd['encoder.pos_embedding'].shape[1]; S = int(round((N - 1) ** 0.5)) * P
L = len({k.split('.')[2] for k in sd if k.startswith('encoder.layers.')})
M = sd['encoder.layers.encoder_layer_0.mlp.0.weight'].shape[0]; C = sd['heads.head.weight'].shape[0]
model = VisionTransformer(S, P, L, a.heads, D, M, num_classes=C)
model.load_state_dict(sd, strict=True)
model.eval().to(a.device)

rep = json.load(open(os.path.join(a.data, 'report.json')))
mean = torch.tensor(rep['mean']).view(1, 3, 1, 1); std = torch.tensor(rep['std']).view(1, 3, 1, 1)
rows = [r for r in csv.DictReader(open(os.path.join(a.data, 'manifest.csv'))) if r['split'] == a.split][::a.every]
out = open(a.preds, 'w') if a.preds else None
correct, n = 0, 0
for i in range(0, len(rows), a.batch):
    chunk = rows[i:i + a.batch]
    xs = []
    for r in chunk:
        im = Image.open(os.path.join(a.data_root or r['src'], r['path'])).convert('RGB')
        if im.size != (S, S):
            raise SystemExit(f"{r['path']}: {im.size}, this check expects {S}x{S} inputs")
        xs.append(torch.from_numpy(np.asarray(im)).permute(2, 0, 1).float() / 255)
    x = (torch.stack(xs) - mean) / std
    with torch.no_grad():
        pred = model(x.to(a.device)).argmax(1).tolist()
    for r, p in zip(chunk, pred):
        correct += CLASSES[p] == r['label']; n += 1
        if out:
            out.write(f"{os.path.join(a.data_root or r['src'], r['path'])},{r['label']},{CLASSES[p]}\n")
    print(f"\r{n}/{len(rows)} accuracy so far {correct / n:.4f}", end='', file=sys.stderr, flush=True)
print(file=sys.stderr)
print(json.dumps({'split': a.split, 'n': n, 'accuracy': correct / n, 'torch': torch.__version__, 'device': a.device}))
