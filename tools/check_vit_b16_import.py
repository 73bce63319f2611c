#!/usr/bin/python3
"""Full-size check: a torchvision vit_b_16 with random weights, saved exactly the way
torchvision's published vit_b_16-c867db91.pth is (torch.save(model.state_dict())),
converted by vitengine and run on the CPU, must give PyTorch's logits.

    /usr/bin/python3 tools/check_vit_b16_import.py --tests build/test_weights \
        --vitengine build/vitengine --workdir /tmp/vitb16 [--gpu-tests build-gpu/vitengine_gpu_tests]

Writes ~330 MB into --workdir (not committed). The comparison itself is the gtest
Torchvision.FullSizeVitB16FromEnv, driven through VITENGINE_VITB16_DIR.
"""
import argparse
import os
import subprocess
import sys
import time

import numpy as np
import torch
import torchvision


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tests", help="test_weights (CPU comparison); optional when --gpu-tests is given, whose test compares the CPU forward too")
    ap.add_argument("--vitengine", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--gpu-tests", help="vitengine_gpu_tests of a CUDA build: also compare the GPU forward")
    a = ap.parse_args()
    os.makedirs(a.workdir, exist_ok=True)
    torch.manual_seed(0)
    model = torchvision.models.vit_b_16(weights=None, num_classes=1000)
    with torch.no_grad():  # torchvision's init leaves a zero head; randomise it
        model.heads.head.weight.normal_(0, 0.02)
        model.heads.head.bias.normal_(0, 0.02)
    model.eval()
    pth = os.path.join(a.workdir, "vit_b_16_random.pth")
    torch.save(model.state_dict(), pth)
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model(x)
    x.numpy().astype("<f4").tofile(os.path.join(a.workdir, "inputs.f32"))
    y.numpy().astype("<f4").tofile(os.path.join(a.workdir, "logits.f32"))
    t = time.time()
    subprocess.run([a.vitengine, "convert", pth, "--out", os.path.join(a.workdir, "vit_b_16_random.vit")], check=True)
    print(f"vitengine convert: {time.time() - t:.1f} s")
    env = dict(os.environ, VITENGINE_VITB16_DIR=os.path.abspath(a.workdir))
    rc = 0
    if a.tests:
        rc = subprocess.run([a.tests, "--gtest_filter=Torchvision.FullSizeVitB16FromEnv"], env=env).returncode
    if a.gpu_tests:
        g = subprocess.run([a.gpu_tests, "--gtest_filter=WeightsCuda.*"], env=env)
        rc = rc or g.returncode
    sys.exit(rc)


if __name__ == "__main__":
    main()
