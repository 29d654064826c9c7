#!/usr/bin/env bash
# Retrain the shipped default models from accent-mini, as their model cards say (docs/models/*.md).
# Long: about an hour on two CPU cores. DATA points at the accent-mini folder.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data/accent-mini}
PY=.venv/bin/python
MAP=native_english=native,mandarin_l1=non_native,other_l1=non_native
train() { "$PY" -m workers.pipeline.training --manifest "$DATA/manifest.csv" --label-column accent_group "$@"; }

# accent-native: the 1.0.0 window model, then 1.1.0 = it, unchanged, fused with reading features of the
# Stella passage (recordings without that transcript keep the window model's answer)
train --family speaker_head --label-map "$MAP" --labels native,non_native --name accent-native \
    --out models/checkpoints/accent-native.pt --epochs 40 --threads 1 --loco SAA --loco VCC2020_EMIME
train --family reading_fusion --label-map "$MAP" --labels native,non_native --name accent-native --version 1.1.0 \
    --hparam base_checkpoint=models/checkpoints/accent-native.pt --hparam passage_words=14 \
    --prompt SAA="$DATA/metadata/saa_reading_passage.txt" --threads 2 --out models/checkpoints/accent-native.pt
train --family speaker_head --name accent-group --out models/checkpoints/accent-group.pt --epochs 40 --threads 1 --loco SAA
train --family accent_embed --name accent-embed --version 1.1.0 --out models/checkpoints/accent-embed.pt \
    --epochs 30 --patience 8 --threads 1 --n-boot 300
echo "Retrained. Cards are written by each command's --card option (see docs/models/); git diff models/ shows what changed."
