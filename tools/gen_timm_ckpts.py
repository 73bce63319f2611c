#!/usr/bin/env python3
"""Writes the timm reference checkpoints that tests/test_weights_torchvision.cpp checks.

timm is on PyPI, not in Debian: run it in a venv on top of Debian's torch, so that nothing else
is downloaded and no weights are fetched (the models are built with random weights):
    /usr/bin/python3 -m venv --system-site-packages /tmp/timmvenv
    /tmp/timmvenv/bin/pip install timm
    /tmp/timmvenv/bin/python tools/gen_timm_ckpts.py tests/data

Everything here comes from timm itself (its VisionTransformer, torch.save, safetensors'
save_file), so the C++ key mapping is tested against an independent producer. Raw arrays are
little-endian float32 (*.f32); timm_refs.json describes them.
"""
import json
import os
import sys

import numpy as np
import torch
import timm
from timm.models.vision_transformer import VisionTransformer
from safetensors.torch import save_file

OUT = sys.argv[1] if len(sys.argv) > 1 else "tests/data"

# The same shapes as torchvision's tv_a, with 16-wide heads (not dim/64), so the test must pass
# the head count as a user would with --heads.
CONFIG = dict(img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3, mlp_ratio=2.0, num_classes=5)


def randomize(model, seed):
    # timm zero-inits some biases and sets LayerNorm to (1, 0): random values everywhere, so a
    # swapped weight/bias or a dropped tensor cannot pass.
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.state_dict().items():
            r = torch.randn(p.shape, generator=g)
            if "norm" in name and name.endswith(".weight"):
                p.copy_(1.0 + 0.2 * r)
            elif p.dim() >= 2 and name not in ("cls_token", "pos_embed"):
                p.copy_(r / p[0].numel() ** 0.5)
            else:
                p.copy_(0.2 * r)


def write_f32(path, t):
    np.ascontiguousarray(t.detach().numpy(), dtype="<f4").tofile(path)


def main():
    os.makedirs(OUT, exist_ok=True)
    torch.set_num_threads(1)
    torch.manual_seed(500)
    model = VisionTransformer(**CONFIG)
    randomize(model, 501)
    model.eval()
    sd = model.state_dict()
    torch.save(sd, os.path.join(OUT, "timm_a.pth"))
    save_file({k: v.contiguous() for k, v in sd.items()}, os.path.join(OUT, "timm_a.safetensors"))
    x = torch.randn(3, 3, CONFIG["img_size"], CONFIG["img_size"], generator=torch.Generator().manual_seed(502))
    with torch.no_grad():
        y = model(x)
    write_f32(os.path.join(OUT, "timm_a.inputs.f32"), x)
    write_f32(os.path.join(OUT, "timm_a.logits.f32"), y)
    refs = {"timm_a": dict(CONFIG, batch=3, pth="timm_a.pth", safetensors="timm_a.safetensors",
                           inputs="timm_a.inputs.f32", logits="timm_a.logits.f32"),
            "generator": dict(torch=torch.__version__, timm=timm.__version__)}
    with open(os.path.join(OUT, "timm_refs.json"), "w") as f:
        json.dump(refs, f, indent=1)


if __name__ == "__main__":
    main()
