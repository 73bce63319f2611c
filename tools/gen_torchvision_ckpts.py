#!/usr/bin/python3
"""Writes the torchvision reference checkpoints that tests/test_weights_*.cpp check.

Run with the system interpreter that has PyTorch 1.13 + torchvision 0.14:
    /usr/bin/python3 tools/gen_torchvision_ckpts.py tests/data

Everything here comes from PyTorch itself (torch.save, torchvision's model and its
interpolate_embeddings), so the C++ readers are tested against an independent producer.
Raw arrays are little-endian float32 (*.f32); torchvision_refs.json describes them.
"""
import json
import os
import struct
import sys
import zipfile

import numpy as np
import torch
import torchvision
from torchvision.models.vision_transformer import VisionTransformer, interpolate_embeddings

OUT = sys.argv[1] if len(sys.argv) > 1 else "tests/data"

CONFIGS = {
    # name: image, patch, dim, depth, heads, mlp, classes, batch
    "tv_a": dict(image_size=32, patch_size=8, hidden_dim=48, num_layers=2, num_heads=3, mlp_dim=96, num_classes=5),
    "tv_b": dict(image_size=48, patch_size=16, hidden_dim=64, num_layers=1, num_heads=4, mlp_dim=128, num_classes=14),
}


def randomize(model, seed):
    # torchvision zero-inits the head and sets LayerNorm to (1, 0); a checkpoint like that
    # could hide swapped weight/bias or a dropped head, so every tensor gets random values.
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.state_dict().items():
            r = torch.randn(p.shape, generator=g)
            if name.endswith("ln_1.weight") or name.endswith("ln_2.weight") or name == "encoder.ln.weight":
                p.copy_(1.0 + 0.2 * r)
            elif p.dim() >= 2 and name != "class_token" and name != "encoder.pos_embedding":
                fan_in = p[0].numel()
                p.copy_(r / fan_in ** 0.5)
            else:
                p.copy_(0.2 * r)


def write_f32(path, t):
    np.ascontiguousarray(t.detach().numpy(), dtype="<f4").tofile(path)


def write_safetensors(path, sd):
    # Written here with struct + numpy (the `safetensors` package is not installed for
    # /usr/bin/python3), following the published layout: u64 header size, JSON, data.
    header, blobs, off = {}, [], 0
    for k, v in sd.items():
        b = np.ascontiguousarray(v.numpy(), dtype="<f4").tobytes()
        header[k] = {"dtype": "F32", "shape": list(v.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def main():
    os.makedirs(OUT, exist_ok=True)
    torch.set_num_threads(1)
    refs = {}
    for i, (name, cfg) in enumerate(CONFIGS.items()):
        torch.manual_seed(100 + i)
        model = VisionTransformer(**cfg)
        randomize(model, 200 + i)
        model.eval()
        sd = model.state_dict()
        # Exactly how torchvision's published vit_b_16-*.pth files are written.
        torch.save(sd, os.path.join(OUT, name + ".pth"))
        write_safetensors(os.path.join(OUT, name + ".safetensors"), sd)
        x = torch.randn(3, 3, cfg["image_size"], cfg["image_size"], generator=torch.Generator().manual_seed(300 + i))
        with torch.no_grad():
            y = model(x)
        write_f32(os.path.join(OUT, name + ".inputs.f32"), x)
        write_f32(os.path.join(OUT, name + ".logits.f32"), y)
        refs[name] = dict(cfg, batch=3, pth=name + ".pth", safetensors=name + ".safetensors",
                          inputs=name + ".inputs.f32", logits=name + ".logits.f32")

    # tv_a fine-tuned at another input size: torchvision's own bicubic interpolation of the
    # position embeddings (grid 4x4 -> 6x6), loaded into a 48-pixel model.
    a = CONFIGS["tv_a"]
    sd = torch.load(os.path.join(OUT, "tv_a.pth"))
    sd48 = interpolate_embeddings(48, a["patch_size"], sd, interpolation_mode="bicubic")
    cfg48 = dict(a, image_size=48)
    m48 = VisionTransformer(**cfg48)
    m48.load_state_dict(sd48)
    m48.eval()
    x48 = torch.randn(2, 3, 48, 48, generator=torch.Generator().manual_seed(400))
    with torch.no_grad():
        y48 = m48(x48)
    write_f32(os.path.join(OUT, "tv_a_img48.pos.f32"), sd48["encoder.pos_embedding"])
    write_f32(os.path.join(OUT, "tv_a_img48.inputs.f32"), x48)
    write_f32(os.path.join(OUT, "tv_a_img48.logits.f32"), y48)
    refs["tv_a_img48"] = dict(cfg48, batch=2, from_pth="tv_a.pth", pos="tv_a_img48.pos.f32",
                              inputs="tv_a_img48.inputs.f32", logits="tv_a_img48.logits.f32")

    # Small files for the reader's corner cases (and the fuzz target): views that share a
    # storage (transpose = non-contiguous, slice = storage offset), fp16 / bf16, a 0-d tensor.
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4) / 4 - 1
    misc = {
        "w": base,
        "wt": base.t(),
        "row": base[1:, 1:3],
        "h": torch.tensor([0.5, -2.0, 65504.0, 1e-4], dtype=torch.float16),
        "bf": torch.tensor([1.5, -3.25, 1e30, 0.0], dtype=torch.bfloat16),
        "s": torch.tensor(7.25),
    }
    torch.save(misc, os.path.join(OUT, "tiny_misc.pth"))
    expect = {k: {"shape": list(v.shape), "values": v.float().reshape(-1).tolist()} for k, v in misc.items()}
    with open(os.path.join(OUT, "tiny_misc.json"), "w") as f:
        json.dump(expect, f, indent=1)
    # Training scripts often save {"model": state_dict, "epoch": n, ...}.
    torch.save({"model": {"x": torch.ones(2, 2)}, "epoch": 3, "lr": 0.5}, os.path.join(OUT, "tiny_wrapped.pth"))
    # An int64 tensor: must be refused with its dtype and key named.
    torch.save({"idx": torch.tensor([1, 2, 3])}, os.path.join(OUT, "tiny_int64.pth"))
    # A hostile archive: data.pkl calls os.system('echo pwned') when unpickled by Python.
    pkl = b"\x80\x02cos\nsystem\nq\x00X\x0b\x00\x00\x00echo pwnedq\x01\x85q\x02Rq\x03."
    with zipfile.ZipFile(os.path.join(OUT, "hostile_os_system.pth"), "w") as z:
        z.writestr("archive/data.pkl", pkl)
        z.writestr("archive/version", "3\n")

    # Views that reach outside their storage: (3, 2) with strides (2, 1) over 4 floats,
    # and a stride of 2^62 (LONG1) whose extent overflows 64 bits. Written by hand: torch
    # never produces them, a hostile file can.
    def view_pkl(size, stride):
        def uni(t):
            return b"X" + struct.pack("<I", len(t)) + t.encode()
        def ints(v):
            out = b"("
            for x in v:
                out += (b"K" + bytes([x])) if x < 256 else (b"\x8a\x08" + struct.pack("<q", x))
            return out + b"t"
        return (b"\x80\x02}(" + uni("w") + b"ctorch._utils\n_rebuild_tensor_v2\n((" + uni("storage") +
                b"ctorch\nFloatStorage\n" + uni("0") + uni("cpu") + b"K\x04tQK\x00" + ints(size) + ints(stride) +
                b"\x89ccollections\nOrderedDict\n)RtRu.")
    for name, size, stride in [("tiny_bad_view", (3, 2), (2, 1)), ("tiny_overflow_view", (3, 2), (1 << 62, 1))]:
        with zipfile.ZipFile(os.path.join(OUT, name + ".pth"), "w") as z:
            z.writestr(name + "/data.pkl", view_pkl(size, stride))
            z.writestr(name + "/data/0", struct.pack("<4f", 1, 2, 3, 4))
            z.writestr(name + "/version", "3\n")

    refs["generator"] = dict(torch=torch.__version__, torchvision=torchvision.__version__)
    with open(os.path.join(OUT, "torchvision_refs.json"), "w") as f:
        json.dump(refs, f, indent=1)


if __name__ == "__main__":
    main()
