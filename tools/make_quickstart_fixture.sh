#!/usr/bin/env bash
# Builds tests/fixtures/quickstart/: a small, committed subset of wbc14 for the CPU
# quick start (docs/training.md) and the training tests. Deterministic: for each of
# the 14 classes it takes 20 files spread evenly over the class's sorted file list
# (Segmented Neutrophil alternates PBC SNE and LMU NGS files), and splits them
# 12 train / 3 val / 5 test. Images are copied unchanged (224 px JPEG, ~9 KB).
# report.json holds the channel mean / std (pixel/255) of the 168 train images,
# computed once when the fixture was made; recompute it if the selection changes.
#
#   tools/make_quickstart_fixture.sh WBC14_DIR [OUT_DIR]
# WBC14_DIR is the unpacked wbc14 folder (../shared/data/wbc14/*.tar.gz).
set -euo pipefail
src=${1:?usage: $0 WBC14_DIR [OUT_DIR]}
out=${2:-tests/fixtures/quickstart}
per=20
mkdir -p "$out/images"
rm -f "$out"/images/*.jpg
manifest="$out/manifest.csv"
echo "path,label,split,sha256,source,subset,src" > "$manifest"

pick() {  # pick N evenly spaced lines from stdin
  awk -v n="$1" '{a[NR]=$0} END {for (i=0;i<n;i++) print a[int(i*NR/n)+1]}'
}
emit() {  # emit FILE LABEL SOURCE INDEX
  local f=$1 label=$2 source=$3 i=$4 split=train
  if [ "$i" -ge 12 ]; then split=val; fi
  if [ "$i" -ge 15 ]; then split=test; fi
  local base; base=$(basename "$f")
  cp "$f" "$out/images/$base"
  local sha; sha=$(sha256sum "$f" | cut -d' ' -f1)
  # src is empty: the path is relative to the manifest's folder
  echo "images/$base,$label,$split,$sha,$source,100," >> "$manifest"
}
for spec in "BA:Basophil" "EO:Eosinophil" "ERB:Erythroblast" "IG:Immature Granulocyte" \
            "MMY:Metamyelocyte" "MY:Myelocyte" "PMY:Promyelocyte" "LY:Lymphocyte" \
            "MO:Monocyte" "BNE:Band Neutrophil" "NEUTROPHIL:Neutrophil" "PLATELET:Platelet" \
            "MYO:Myeloblast"; do
  p=${spec%%:*}; label=${spec#*:}
  i=0
  while read -r f; do
    source=pbc; case "$f" in *aml-lmu*) source=aml-lmu;; esac
    emit "$f" "$label" "$source" $i; i=$((i+1))
  done < <(find "$src" -name "${p}_*.jpg" ! -name '.*' | sort | pick $per)
done
# Segmented Neutrophil: 10 PBC (SNE) + 10 LMU (NGS), interleaved so every split has both.
paste -d'\n' <(find "$src" -name 'SNE_*.jpg' | sort | pick 10) <(find "$src" -name 'NGS_*.jpg' | sort | pick 10) > /tmp/seg.$$
i=0
while read -r f; do
  source=pbc; case "$f" in *aml-lmu*) source=aml-lmu;; esac
  emit "$f" "Segmented Neutrophil" "$source" $i; i=$((i+1))
done < /tmp/seg.$$
rm -f /tmp/seg.$$
echo "wrote $(($(wc -l < "$manifest") - 1)) rows to $manifest"
