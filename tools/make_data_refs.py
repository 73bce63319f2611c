#!/usr/bin/env python3
"""Writes the reference files that tests/test_data_*.cpp compare against.

Run with the system Python that has PyTorch 1.13 / torchvision 0.14 / Pillow:
    /usr/bin/python3 tools/make_data_refs.py
Outputs (tests/data/, committed, small):
  ta_ops.json          TrivialAugmentWide op names, magnitude bins and signed flags (torchvision)
  ta/<op>.png          each op applied by torchvision's tensor path to ta_input.png
  ta_input.png         64x64 crop of a fixture, the input of the ta/ references
  resize_*.png         pad-to-square with the border-mean colour, then PIL BILINEAR (antialiased) resize
  small_120.bmp        a 120x120 BMP (fixture for the upscale path), in tests/fixtures/
  grid_reflect.json    F.grid_sample (bilinear, padding_mode='reflection', align_corners=False, float64)
                       of ta_input.png's central 32x32 under rotation/zoom/flip/shift: the augmentation's reflect_border
                       (`/usr/bin/python3 tools/make_data_refs.py reflect` writes only this file)
The pad is done here with numpy, independently of the C++ code under test.
"""
import json
import os

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode, autoaugment

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "tests", "data")
FIX = os.path.join(ROOT, "tests", "fixtures", "wbc")


def pad_border_mean(a):
    """Centre a HxWx3 uint8 array on a square filled with the mean of its 1-px border."""
    h, w, _ = a.shape
    ring = np.concatenate([a[0], a[-1], a[1:-1, 0], a[1:-1, -1]]).astype(np.float64)
    fill = np.floor(ring.mean(axis=0) + 0.5).astype(np.uint8)  # round half up, as lround on positives
    s = max(h, w)
    out = np.empty((s, s, 3), np.uint8)
    out[:] = fill
    oy, ox = (s - h) // 2, (s - w) // 2
    out[oy:oy + h, ox:ox + w] = a
    return out


def resize_ref(src, name, size=224):
    a = np.asarray(Image.open(src).convert("RGB"))
    sq = pad_border_mean(a)
    Image.fromarray(sq).resize((size, size), Image.BILINEAR).save(os.path.join(DATA, name))


def grid_reflect_refs():
    """The reference recipe's resample (its augment(): affine_grid + grid_sample with reflection),
    in float64, for sampling matrices m in vitengine's convention (engine/data/augment.h AugmentParams:
    output pixel centre p, in pixels from the image centre, samples the input at A p + t) plus a
    shift in fractions of the side. Square input, so pixel -> grid units is one factor 2/S."""
    import math
    import torch.nn.functional as F
    a = np.ascontiguousarray(np.asarray(Image.open(os.path.join(DATA, "ta_input.png")).convert("RGB"))[16:48, 16:48])
    S = a.shape[0]
    x = torch.from_numpy(a.astype(np.float64)).permute(2, 0, 1)[None]
    cases = []
    # (angle deg, flip, scale, shift x, shift y): a plain shift; zoom-outs that reflect once; a
    # strong zoom-out with a large shift that reflects more than once (the fmod path).
    for ang, flip, scale, tx, ty in [(0, False, 1.0, 0.2, -0.15), (37, False, 0.8, 0.05, -0.1),
                                     (200, True, 0.6, -0.03, 0.03), (123, True, 0.3, 0.4, -0.45)]:
        r = math.radians(ang)
        m = [math.cos(r) / scale, math.sin(r) / scale, 0.0, -math.sin(r) / scale, math.cos(r) / scale, 0.0]
        if flip:
            m[0], m[3] = -m[0], -m[3]
        theta = torch.tensor([[[m[0], m[1], (m[2] + tx * S) * 2 / S], [m[3], m[4], (m[5] + ty * S) * 2 / S]]],
                             dtype=torch.float64)
        grid = F.affine_grid(theta, (1, 3, S, S), align_corners=False)
        out = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
        cases.append({"m": m, "shift": [tx, ty], "out_hwc": [round(v, 4) for v in out[0].permute(1, 2, 0).reshape(-1).tolist()]})
    with open(os.path.join(DATA, "grid_reflect.json"), "w") as f:
        json.dump({"torch": torch.__version__, "input": "ta_input.png[16:48, 16:48]", "size": S,
                   "input_hwc": a.reshape(-1).tolist(), "cases": cases}, f)


def main():
    os.makedirs(os.path.join(DATA, "ta"), exist_ok=True)
    # 1. Op list and bins, straight from torchvision.
    ta = autoaugment.TrivialAugmentWide()
    space = ta._augmentation_space(31)
    ops = []
    for name, (mags, signed) in space.items():
        m = mags.tolist() if mags.ndim > 0 else []
        ops.append({"name": name, "magnitudes": [float(x) for x in m], "signed": bool(signed)})
    with open(os.path.join(DATA, "ta_ops.json"), "w") as f:
        json.dump({"torchvision": __import__("torchvision").__version__, "num_bins": 31, "ops": ops}, f, indent=1)

    # 2. Each op through torchvision's tensor path on a 64x64 crop.
    a = np.asarray(Image.open(os.path.join(FIX, "pbc", "basophil", "BA_100102.jpg")).convert("RGB"))
    crop = np.ascontiguousarray(a[150:214, 140:204])
    Image.fromarray(crop).save(os.path.join(DATA, "ta_input.png"))
    t = torch.from_numpy(crop).permute(2, 0, 1).contiguous()
    fill = [200.0, 150.0, 180.0]
    cases = [("Identity", 0.0), ("ShearX", 0.3), ("ShearY", -0.3), ("TranslateX", 10.0), ("TranslateY", -7.0),
             ("Rotate", 30.0), ("Brightness", 0.5), ("Brightness", -0.4), ("Color", 0.6), ("Color", -0.5),
             ("Contrast", 0.5), ("Contrast", -0.5), ("Sharpness", 0.9), ("Sharpness", -0.5), ("Posterize", 4.0),
             ("Solarize", 128.0), ("AutoContrast", 0.0), ("Equalize", 0.0)]
    index = []
    for op, mag in cases:
        out = autoaugment._apply_op(t, op, mag, interpolation=InterpolationMode.NEAREST, fill=fill)
        fn = f"{op}_{mag:g}.png"
        Image.fromarray(out.permute(1, 2, 0).numpy()).save(os.path.join(DATA, "ta", fn))
        index.append({"op": op, "magnitude": mag, "file": "ta/" + fn})
    with open(os.path.join(DATA, "ta_cases.json"), "w") as f:
        json.dump({"fill": fill, "input": "ta_input.png", "cases": index}, f, indent=1)

    # 3. Resize references: 360x363 PBC (pad + downscale), 400x400 LMU (downscale), 120x120 BMP (upscale).
    small = Image.fromarray(np.ascontiguousarray(a[120:240, 120:240]))
    small.save(os.path.join(ROOT, "tests", "fixtures", "small_120.bmp"))
    resize_ref(os.path.join(FIX, "pbc", "basophil", "BA_100102.jpg"), "resize_BA_100102_224.png")
    resize_ref(os.path.join(FIX, "aml-lmu", "MYO", "MYO_0001.jpg"), "resize_MYO_0001_224.png")
    resize_ref(os.path.join(ROOT, "tests", "fixtures", "small_120.bmp"), "resize_small_120_224.png")
    # A non-square wide case so the pad (left/right vs top/bottom) is exercised both ways.
    wide = Image.fromarray(np.ascontiguousarray(a[100:180, 60:300]))
    wide.save(os.path.join(ROOT, "tests", "fixtures", "wide_240x80.png"))
    resize_ref(os.path.join(ROOT, "tests", "fixtures", "wide_240x80.png"), "resize_wide_240x80_64.png", 64)


if __name__ == "__main__":
    import sys
    if sys.argv[1:] == ["reflect"]:
        grid_reflect_refs()
    else:
        main()
        grid_reflect_refs()
