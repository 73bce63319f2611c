#!/usr/bin/env bash
# The fine-tuning demonstration of docs/weights.md: pre-train on the 9 coarse groups, export
# to torchvision safetensors, import with --init (new 14-class head), fine-tune; and the same
# model from scratch for the same number of steps. CPU, 2 cores, about 6 minutes.
#   V=build/vitengine D=<vitengine prepare output> ROOT=<wbc14 folder> OUTDIR=/tmp/ft bash docs/finetune/run.sh
set -e
V=$(realpath "${V:-build/vitengine}")
D=$(realpath "${D:-/work/data/prepared-wbc14}")
ROOT=${ROOT:-/work/main/data/wbc14}
COMMON="--data $D --set data_root=$ROOT --set model=vit_ti16 --set image_size=64 --set patch=8 --set dim=96 --set depth=3 --set heads=3 --set mlp_dim=192 --set subset=20 --set epochs=8 --set batch_size=32 --set lr=1e-3 --set weight_decay=0.05 --set schedule=cosine --set warmup_epochs=1 --set label_smoothing=0.1 --set grad_clip=1.0 --set augment=light --set threads=2 --set eval_every=1 --set log_every=1000 --set use_packs=false --set seed=0"
mkdir -p "${OUTDIR:-/tmp/ft}" && cd "${OUTDIR:-/tmp/ft}"
rm -rf G F S
"$V" train $COMMON --set label_level=group --out G          # 9 coarse groups
"$V" export G/best.vit --out g.safetensors                  # torchvision format
"$V" train $COMMON --init g.safetensors --out F              # import, new 14-class head, fine-tune
"$V" train $COMMON --out S                                   # from scratch, same steps
