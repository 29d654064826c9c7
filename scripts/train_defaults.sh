#!/usr/bin/env bash
# Retrain the shipped models from accent-mini, as their model cards say (docs/models/*.md).
# The Whisper probes share one cache of encoder features (ACCENTSITE_CACHE, default var/cache):
# ~15 min on two CPU cores for the first, minutes for the others. DATA points at the accent-mini folder.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data/accent-mini}
export ACCENTSITE_CACHE=${ACCENTSITE_CACHE:-var/cache}
PY=.venv/bin/python
MAP=native_english=native,mandarin_l1=non_native,other_l1=non_native
train() { "$PY" -m workers.pipeline.training --manifest "$DATA/manifest.csv" --label-column accent_group "$@"; }

# accent-native 3.1.0, the default: 3.0.0's probe (state 6, 8-s windows) with statistics pooling (the mean and the
# standard deviation of the state over each window) and up to four noisy copies of every clip; pooling was compared
# by running this with pooling=mean too, copies and C chosen by speaker-grouped CV on SAA scored clean and at 10 dB
# pink noise and babble (docs/models/rules/accent-native-3.1.0.md); the card's notes and robustness section come
# from scripts/render_card.py with docs/models/notes/accent-native.md
train --family whisper_probe --label-map "$MAP" --labels native,non_native --name accent-native --version 3.1.0 \
    --select-corpus SAA --threads 2 --window-s 8 --hop-s 8 --hparam 'states=[6]' --hparam augment_copies=4 \
    --hparam 'augment_grid=[0,1,2,4]' --hparam augment_seed=0 --hparam 'select_conditions=["pink_10db","babble_10db"]' \
    --hparam select_conditions_seed=0 --hparam select_min_clean=0.888 --hparam pooling=mean_std \
    --out models/checkpoints/accent-native.pt --card docs/models/accent-native.md --loco SAA
# accent-native 3.0.0 (kept as accent-native@3.0.0): 2.1.0's probe (state 6, 8-s windows) trained with one noisy copy of every clip,
# copies and C chosen by speaker-grouped CV on SAA scored clean and at 10 dB pink noise and babble
# (docs/models/rules/accent-native-3.0.0.md); the card's notes and robustness section come from
# scripts/render_card.py with docs/models/notes/accent-native-3.0.0.md
train --family whisper_probe --label-map "$MAP" --labels native,non_native --name accent-native --version 3.0.0 \
    --select-corpus SAA --threads 2 --window-s 8 --hop-s 8 --hparam 'states=[6]' --hparam augment_copies=1 \
    --hparam 'augment_grid=[0,1]' --hparam augment_seed=0 --hparam 'select_conditions=["pink_10db","babble_10db"]' \
    --hparam select_conditions_seed=0 --hparam select_min_clean=0.888 --out models/checkpoints/accent-native-3.0.0.pt \
    --card docs/models/accent-native-3.0.0.md
# accent-native 2.1.0 (kept as accent-native@2.1.0): the same probe without augmentation (state and C chosen by CV on SAA)
train --family whisper_probe --label-map "$MAP" --labels native,non_native --name accent-native --version 2.1.0 \
    --select-corpus SAA --threads 2 --window-s 8 --hop-s 8 --out models/checkpoints/accent-native-2.1.0.pt \
    --card docs/models/accent-native-2.1.0.md --loco SAA --loco VCC2020_EMIME
# accent-native 2.0.0 (kept as accent-native@2.0.0): the same on 20-s windows, with its leave-one-corpus-out runs
train --family whisper_probe --label-map "$MAP" --labels native,non_native --name accent-native --version 2.0.0 \
    --select-corpus SAA --threads 2 --out models/checkpoints/accent-native-2.0.0.pt --card docs/models/accent-native-2.0.0.md \
    --loco SAA --loco VCC2020_EMIME
# accent-group 2.0.0 (native / Mandarin / other L1) on the same cached features
train --family whisper_probe --name accent-group --version 2.0.0 --select-corpus SAA --threads 2 \
    --out models/checkpoints/accent-group.pt --card docs/models/accent-group.md --loco SAA
# accent-embed 2.0.0, the default embedding: the same cached features, LDA axes (labels, L1 or both) chosen by CV
train --family whisper_probe --task embed --name accent-embed --version 2.0.0 --select-corpus SAA --threads 1 \
    --out models/checkpoints/accent-embed.pt --card docs/models/accent-embed.md
# accent-embed 1.1.0 (kept as accent-embed@1.1.0: the accent_embed family, 128-d)
if [ "${WITH_EMBED_1_1:-0}" = 1 ]; then
  train --family accent_embed --name accent-embed --version 1.1.0 --out models/checkpoints/accent-embed-1.1.0.pt \
      --card docs/models/accent-embed-1.1.0.md --epochs 30 --patience 8 --threads 1 --n-boot 300
fi

# accent-native 1.1.0 (kept as accent-native@1.1.0 for recordings of the Stella passage): the GE2E window
# model, then it fused with reading features of the passage (docs/models/accent-native-1.1.0.md)
if [ "${WITH_1_1:-0}" = 1 ]; then
  train --family speaker_head --label-map "$MAP" --labels native,non_native --name accent-native --version 1.0.0 \
      --out var/accent-native-1.0.0.pt --epochs 40 --threads 1
  train --family reading_fusion --label-map "$MAP" --labels native,non_native --name accent-native --version 1.1.0 \
      --hparam base_checkpoint=var/accent-native-1.0.0.pt --hparam passage_words=14 \
      --prompt SAA="$DATA/metadata/saa_reading_passage.txt" --threads 2 --out models/checkpoints/accent-native-1.1.0.pt
fi
echo "Retrained. git diff models/ docs/models/ shows what changed."
