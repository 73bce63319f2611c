#!/usr/bin/python3
"""Checks that `vitengine export` output loads into torchvision and gives the same logits.

    /usr/bin/python3 tools/check_export_torchvision.py --vitengine build/vitengine \
        --tests build/test_weights --data tests/data --workdir build/export_check

Two directions:
  A. torch -> vitengine -> torch: tv_a.pth is converted (`vitengine convert`), exported
     again (`vitengine export`), loaded with load_state_dict(strict=True), and must give
     the logits PyTorch recorded for the original model.
  B. vitengine -> torch: a model that only vitengine produced (test_weights
     --gtest_filter=Export.WriteVitengineModelForPyTorchCheck writes it with its own
     logits) is exported and must give the same logits in torchvision.
safetensors files are parsed here with struct + numpy: the `safetensors` package is not
installed for /usr/bin/python3. Exit 77 (ctest SKIP) when PyTorch is not available.
"""
import argparse
import json
import os
import struct
import subprocess
import sys

try:
    import numpy as np
    import torch
    from torchvision.models.vision_transformer import VisionTransformer
except ImportError as e:  # no PyTorch on this machine: nothing to compare against
    print("SKIP: PyTorch/torchvision not importable:", e)
    sys.exit(77)


def load_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    meta = header.pop("__metadata__", {})
    base = 8 + n
    sd = {}
    for k, v in header.items():
        b, e = v["data_offsets"]
        if v["dtype"] == "F32":
            a = np.frombuffer(raw[base + b:base + e], dtype="<f4")
        elif v["dtype"] == "BF16":
            u = np.frombuffer(raw[base + b:base + e], dtype="<u2").astype(np.uint32) << 16
            a = u.view(np.float32)
        else:
            raise ValueError(f"{path}: unexpected dtype {v['dtype']} for {k}")
        sd[k] = torch.from_numpy(a.copy().reshape(v["shape"]))
    return sd, meta


def torchvision_logits(st_path, x):
    sd, meta = load_safetensors(st_path)
    c = json.loads(meta["vitengine_config"])
    model = VisionTransformer(image_size=c["image_size"], patch_size=c["patch"], num_layers=c["depth"],
                              num_heads=c["heads"], hidden_dim=c["dim"], mlp_dim=c["mlp_dim"],
                              num_classes=c["num_classes"])
    model.load_state_dict(sd, strict=True)  # every key, every shape, nothing extra
    model.eval()
    with torch.no_grad():
        return model(x).numpy()


def run(cmd, env=None):
    print("$", " ".join(cmd))
    subprocess.run(cmd, check=True, env=env)


def report(name, got, ref, tol):
    d = float(np.max(np.abs(got - ref)))
    ok = d <= tol * (1 + float(np.max(np.abs(ref))))
    print(f"{name}: max |logit diff| = {d:.3e} over {ref.size} logits (max |logit| {np.max(np.abs(ref)):.3f}) -> {'OK' if ok else 'FAIL'}")
    return ok


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--vitengine", required=True)
    ap.add_argument("--tests", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--workdir", required=True)
    a = ap.parse_args()
    os.makedirs(a.workdir, exist_ok=True)
    torch.set_num_threads(1)
    refs = json.load(open(os.path.join(a.data, "torchvision_refs.json")))
    ok = True

    # A. torch -> vitengine -> torch (weights must survive bit-exactly: identical logits)
    r = refs["tv_a"]
    vit = os.path.join(a.workdir, "tv_a.vit")
    st = os.path.join(a.workdir, "tv_a_export.safetensors")
    run([a.vitengine, "convert", os.path.join(a.data, r["pth"]), "--heads", str(r["num_heads"]), "--out", vit])
    run([a.vitengine, "export", vit, "--out", st])
    x = torch.from_numpy(np.fromfile(os.path.join(a.data, r["inputs"]), dtype="<f4").reshape(r["batch"], 3, r["image_size"], r["image_size"]))
    ref = np.fromfile(os.path.join(a.data, r["logits"]), dtype="<f4").reshape(r["batch"], -1)
    ok &= report("A torch->vitengine->torch (tv_a)", torchvision_logits(st, x), ref, 0.0)

    # B. vitengine -> torch
    env = dict(os.environ, VITENGINE_EXPORT_CHECK_DIR=os.path.abspath(a.workdir))
    run([a.tests, "--gtest_filter=Export.WriteVitengineModelForPyTorchCheck"], env=env)
    r = refs["tv_b"]
    x = torch.from_numpy(np.fromfile(os.path.join(a.data, r["inputs"]), dtype="<f4").reshape(r["batch"], 3, r["image_size"], r["image_size"]))
    ve = np.fromfile(os.path.join(a.workdir, "vitengine_logits.f32"), dtype="<f4").reshape(r["batch"], -1)
    # Two fp32 implementations (Eigen vs ATen): 1e-4 relative to the logit scale.
    ok &= report("B vitengine->torch f32", torchvision_logits(os.path.join(a.workdir, "vitengine_model.safetensors"), x), ve, 1e-4)
    # The CLI path too: the .vit the test wrote, exported by `vitengine export`.
    st = os.path.join(a.workdir, "vitengine_model_cli.safetensors")
    run([a.vitengine, "export", os.path.join(a.workdir, "vitengine_model.vit"), "--out", st])
    ok &= report("B vitengine->torch f32 via CLI", torchvision_logits(st, x), ve, 1e-4)
    # bf16 weights: 2^-8 relative rounding per weight; logits move by ~1e-2 of their scale.
    ok &= report("B vitengine->torch bf16", torchvision_logits(os.path.join(a.workdir, "vitengine_model_bf16.safetensors"), x), ve, 5e-2)
    print("torch", torch.__version__, "numpy", np.__version__)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
