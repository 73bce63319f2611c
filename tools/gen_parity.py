#!/usr/bin/python3
"""Write PyTorch reference tensors for vitengine's parity tests (tests/data/parity_*).

Run with Debian's PyTorch (python3-torch / python3-torchvision):
    /usr/bin/python3 tools/gen_parity.py

For each small torchvision.models.VisionTransformer configuration it saves
(all float32, little-endian, in one .bin with a .json index):
  param.<key>   every state_dict tensor (random, including the head, so every gradient is non-trivial)
  input         images (B, 3, S, S);  labels (as floats)
  logits        model(input) in eval mode (dropout 0)
  loss          cross_entropy(logits, labels, label_smoothing=0.1)
  grad.<key>    every parameter gradient of that loss
  losses10      the losses of 10 AdamW steps (lr 1e-3, wd 0.05 on weight matrices, clip 1.0)
It also writes vit_b16_hashinit.json: logits of a full-size vit_b_16 whose weights come
from a hash of each key name (see hash_uniform), so the C++ test can rebuild the same
weights without storing 86M numbers.
"""
import json, os, struct
import numpy as np
import torch
import torch.nn.functional as F
import torchvision

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'tests', 'data')
DECAY_SUFFIXES = ('conv_proj.weight', 'in_proj_weight', 'out_proj.weight', 'mlp.0.weight', 'mlp.3.weight',
                  'heads.head.weight')


def save(name, tensors, meta):
    index, blobs, off = {}, [], 0
    for k, t in tensors.items():
        a = np.ascontiguousarray(t.detach().cpu().numpy().astype('<f4'))
        index[k] = {'shape': list(a.shape), 'offset': off}
        blobs.append(a.tobytes()); off += a.size
    with open(os.path.join(OUT, name + '.bin'), 'wb') as f:
        f.write(b''.join(blobs))
    with open(os.path.join(OUT, name + '.json'), 'w') as f:
        json.dump({'meta': meta, 'tensors': index}, f, indent=0)


def make(cfg, seed):
    torch.manual_seed(seed)
    m = torchvision.models.VisionTransformer(image_size=cfg['image_size'], patch_size=cfg['patch'],
                                             num_layers=cfg['depth'], num_heads=cfg['heads'],
                                             hidden_dim=cfg['dim'], mlp_dim=cfg['mlp_dim'],
                                             num_classes=cfg['num_classes'], dropout=0.0, attention_dropout=0.0)
    with torch.no_grad():
        for k, p in m.named_parameters():
            if k.endswith('ln_1.weight') or k.endswith('ln_2.weight') or k == 'encoder.ln.weight':
                p.copy_(1 + 0.1 * torch.randn_like(p))
            else:
                p.copy_(0.1 * torch.randn_like(p))
    return m


def parity(name, cfg, B, seed):
    m = make(cfg, seed)
    torch.manual_seed(seed + 1)
    x = torch.randn(B, 3, cfg['image_size'], cfg['image_size'])
    y = torch.randint(0, cfg['num_classes'], (B,))
    m.eval()
    logits = m(x)
    loss = F.cross_entropy(logits, y, label_smoothing=0.1)
    loss.backward()
    t = {'param.' + k: v for k, v in m.state_dict().items()}
    t.update({'grad.' + k: p.grad for k, p in m.named_parameters()})
    t['input'] = x; t['labels'] = y.float(); t['logits'] = logits; t['loss'] = loss.reshape(1)
    # 10 AdamW steps from the same weights on the same batch
    m2 = make(cfg, seed)
    m2.eval()
    decay = [p for k, p in m2.named_parameters() if k.endswith(DECAY_SUFFIXES)]
    rest = [p for k, p in m2.named_parameters() if not k.endswith(DECAY_SUFFIXES)]
    opt = torch.optim.AdamW([{'params': decay, 'weight_decay': 0.05}, {'params': rest, 'weight_decay': 0.0}],
                            lr=1e-3, betas=(0.9, 0.999), eps=1e-8)
    losses = []
    for _ in range(10):
        opt.zero_grad()
        l = F.cross_entropy(m2(x), y, label_smoothing=0.1)
        l.backward()
        torch.nn.utils.clip_grad_norm_(m2.parameters(), 1.0)
        opt.step()
        losses.append(l.item())
    t['losses10'] = torch.tensor(losses)
    save(name, t, dict(cfg, batch=B, smoothing=0.1, lr=1e-3, weight_decay=0.05, clip=1.0, torch=torch.__version__,
                       torchvision=torchvision.__version__))
    print(name, 'loss', loss.item(), 'losses10', [round(v, 5) for v in losses])


def fnv1a64(s):
    h = 0xcbf29ce484222325
    for c in s.encode():
        h = ((h ^ c) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h


def hash_uniform(key, n):
    """u in [-1, 1): splitmix64(fnv1a64(key) + golden * (i + 1)), top 24 bits. Mirrors tests/test_parity.cpp."""
    M = np.uint64(0xFFFFFFFFFFFFFFFF)
    i = np.arange(n, dtype=np.uint64)
    with np.errstate(over='ignore'):
        z = np.uint64(fnv1a64(key)) + np.uint64(0x9E3779B97F4A7C15) * (i + np.uint64(1))
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(40)).astype(np.float64) / 16777216.0 * 2.0 - 1.0


def hash_value(key, n):
    u = hash_uniform(key, n)
    if key.endswith('ln_1.weight') or key.endswith('ln_2.weight') or key == 'encoder.ln.weight':
        return 1.0 + 0.1 * u
    if key.endswith(DECAY_SUFFIXES):
        return 0.05 * u
    return 0.02 * u


def vit_b16_hashinit():
    m = torchvision.models.vit_b_16(num_classes=14)
    with torch.no_grad():
        for k, p in m.state_dict().items():
            p.copy_(torch.from_numpy(hash_value(k, p.numel()).astype(np.float32)).view(p.shape))
    x = torch.from_numpy(hash_uniform('input', 2 * 3 * 224 * 224).astype(np.float32)).view(2, 3, 224, 224)
    m.eval()
    with torch.no_grad():
        logits = m(x)
    json.dump({'batch': 2, 'logits': logits.flatten().tolist(), 'torch': torch.__version__},
              open(os.path.join(OUT, 'vit_b16_hashinit.json'), 'w'))
    print('vit_b16 logits', logits[0, :4].tolist())


if __name__ == '__main__':
    import sys
    os.makedirs(OUT, exist_ok=True)
    torch.set_num_threads(2)
    if len(sys.argv) > 1 and sys.argv[1] == '--only-c':  # regenerate the newest file alone
        parity('parity_tiny_c', dict(image_size=32, patch=8, dim=64, depth=2, heads=2, mlp_dim=128, num_classes=14), 4, 3)
        sys.exit(0)
    parity('parity_tiny_a', dict(image_size=32, patch=8, dim=48, depth=2, heads=3, mlp_dim=96, num_classes=14), 4, 1)
    parity('parity_tiny_b', dict(image_size=32, patch=16, dim=32, depth=1, heads=2, mlp_dim=64, num_classes=5), 3, 2)
    # head dim 32: a shape the GPU attention kernel supports (Dh 32 or 64), for the GPU parity tests
    parity('parity_tiny_c', dict(image_size=32, patch=8, dim=64, depth=2, heads=2, mlp_dim=128, num_classes=14), 4, 3)
    vit_b16_hashinit()
