#!/usr/bin/python3
"""Write PyTorch reference tensors for vitengine's masked-autoencoder parity test (tests/data/mae_parity_*).

Run with Debian's PyTorch (python3-torch / python3-torchvision):
    /usr/bin/python3 tools/gen_mae_parity.py

A small masked autoencoder (He et al. 2022) written here in PyTorch, independently of vitengine: a
torchvision VisionTransformer's embedding, blocks and final LayerNorm as the encoder (run on the
class token and the visible patches only), a decoder of torchvision EncoderBlocks with its own
width, learned mask token and position embedding, and the MSE on the hidden patches against each
patch's normalised pixels. With a fixed mask (the visible patches are stored), it saves:
  param.<key>   every encoder and decoder tensor (random, so every gradient is non-trivial)
  input, keep   images (B, 3, S, S) and visible patch indices (B, Nv) as floats
  loss          the reconstruction loss;  grad.<key>  every gradient of it
  losses10      the losses of 10 AdamW steps (lr 1e-3, wd 0.05 on weight matrices, clip 1.0)
"""
import os
from collections import OrderedDict
from functools import partial

import torch
import torch.nn as nn
import torchvision
from torchvision.models.vision_transformer import EncoderBlock

from gen_parity import save

DECAY_SUFFIXES = ('conv_proj.weight', 'in_proj_weight', 'out_proj.weight', 'mlp.0.weight', 'mlp.3.weight',
                  'heads.head.weight', 'decoder_embed.weight', 'decoder_pred.weight')


class MAE(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.vit = torchvision.models.VisionTransformer(
            image_size=c['image_size'], patch_size=c['patch'], num_layers=c['depth'], num_heads=c['heads'],
            hidden_dim=c['dim'], mlp_dim=c['mlp_dim'], num_classes=1, dropout=0.0, attention_dropout=0.0)
        n, dd, k = (c['image_size'] // c['patch']) ** 2 + 1, c['dec_dim'], 3 * c['patch'] ** 2
        self.decoder_embed = nn.Linear(c['dim'], dd)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dd))
        self.decoder_pos_embed = nn.Parameter(torch.zeros(1, n, dd))
        ln = partial(nn.LayerNorm, eps=1e-6)
        self.decoder = nn.Module()
        self.decoder.layers = nn.Sequential(OrderedDict(
            (f'decoder_layer_{i}', EncoderBlock(c['dec_heads'], dd, c['dec_mlp'], 0.0, 0.0, ln))
            for i in range(c['dec_depth'])))
        self.decoder_norm = ln(dd)
        self.decoder_pred = nn.Linear(dd, k)

    def patchify(self, x):  # (B, 3, S, S) -> (B, Np, 3*P*P), each patch in (c, ky, kx) order
        B, C, S, _ = x.shape
        P, g = self.c['patch'], S // self.c['patch']
        return x.reshape(B, C, g, P, g, P).permute(0, 2, 4, 1, 3, 5).reshape(B, g * g, C * P * P)

    def forward(self, x, keep):
        B, v = x.shape[0], self.vit
        t = v._process_input(x)                                     # (B, Np, D)
        t = torch.cat([v.class_token.expand(B, -1, -1), t], 1) + v.encoder.pos_embedding
        rows = torch.cat([torch.zeros(B, 1, dtype=torch.long), keep + 1], 1)   # class token + visible
        h = torch.gather(t, 1, rows.unsqueeze(-1).expand(-1, -1, t.shape[-1]))
        h = v.encoder.ln(v.encoder.layers(h))                       # encoder on 1 + Nv tokens
        e = self.decoder_embed(h)
        full = self.mask_token.expand(B, t.shape[1], -1)
        full = torch.scatter(full, 1, rows.unsqueeze(-1).expand(-1, -1, e.shape[-1]), e)
        y = self.decoder.layers(full + self.decoder_pos_embed)
        pred = self.decoder_pred(self.decoder_norm(y))[:, 1:]      # drop the class token
        target = self.patchify(x)
        mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
        target = (target - mean) / (var + 1e-6) ** 0.5
        hidden = torch.ones(B, t.shape[1] - 1)
        hidden.scatter_(1, keep, 0.0)
        per_patch = ((pred - target) ** 2).mean(-1)
        return (per_patch * hidden).sum() / hidden.sum()


def make(c, seed):
    torch.manual_seed(seed)
    m = MAE(c)
    with torch.no_grad():
        for k, p in m.named_parameters():
            if k.endswith(('ln_1.weight', 'ln_2.weight', 'encoder.ln.weight', 'decoder_norm.weight')):
                p.copy_(1 + 0.1 * torch.randn_like(p))
            else:
                p.copy_(0.1 * torch.randn_like(p))
    return m


def state(m):  # vitengine's names: the encoder's are torchvision's, without the "vit." prefix
    return {(k[4:] if k.startswith('vit.') else k): p for k, p in m.named_parameters()}


def parity(name, c, B, seed):
    m = make(c, seed)
    torch.manual_seed(seed + 1)
    S, np_ = c['image_size'], (c['image_size'] // c['patch']) ** 2
    nv = max(1, int(np_ * (1 - 0.75)))
    x = torch.randn(B, 3, S, S)
    keep = torch.stack([torch.randperm(np_)[:nv] for _ in range(B)])  # unsorted: any order must work
    loss = m(x, keep)
    loss.backward()
    t = {'param.' + k: p for k, p in state(m).items()}
    # the encoder's head is not part of the autoencoder: no gradient, stored as zeros
    t.update({'grad.' + k: (p.grad if p.grad is not None else torch.zeros_like(p)) for k, p in state(m).items()})
    t['input'] = x; t['keep'] = keep.float(); t['loss'] = loss.reshape(1)
    m2 = make(c, seed)
    named = list(state(m2).items())
    decay = [p for k, p in named if k.endswith(DECAY_SUFFIXES)]
    rest = [p for k, p in named if not k.endswith(DECAY_SUFFIXES)]
    opt = torch.optim.AdamW([{'params': decay, 'weight_decay': 0.05}, {'params': rest, 'weight_decay': 0.0}],
                            lr=1e-3, betas=(0.9, 0.999), eps=1e-8)
    losses = []
    for _ in range(10):
        opt.zero_grad()
        l = m2(x, keep)
        l.backward()
        torch.nn.utils.clip_grad_norm_(m2.parameters(), 1.0)
        opt.step()
        losses.append(l.item())
    t['losses10'] = torch.tensor(losses)
    save(name, t, dict(c, batch=B, num_visible=nv, lr=1e-3, weight_decay=0.05, clip=1.0, torch=torch.__version__,
                       torchvision=torchvision.__version__))
    print(name, 'loss', loss.item(), 'losses10', [round(v, 5) for v in losses])


if __name__ == '__main__':
    torch.set_num_threads(2)
    parity('mae_parity_a', dict(image_size=16, patch=4, dim=32, depth=2, heads=4, mlp_dim=64,
                                dec_dim=24, dec_depth=2, dec_heads=3, dec_mlp=48), 3, 11)
    parity('mae_parity_b', dict(image_size=32, patch=8, dim=48, depth=1, heads=3, mlp_dim=96,
                                dec_dim=16, dec_depth=1, dec_heads=2, dec_mlp=32), 2, 12)
