#!/usr/bin/env bash
# Few-label adaptation of issue #15: a coronacases-trained model fine-tuned on N labelled slices
# of radiopaedia cases, against the same N slices from scratch (same budget).
#   [SEED=K] [LR=X] [STEPS=S] bash scripts/adapt_curve.sh N finetune|rehearse SOURCE/best.pt   |   ... N scratch
# rehearse: fine-tunes on the N slices and the source model's own training cases together,
# half of the draws from each (data.rehearse_from), so the source is not forgotten.
# Labelled pool: case11, case13, case16 (172 slices); N of them are drawn (seeded, nested:
# the 5 slices are among the 10...). Scored on the other radiopaedia cases (case10, 12, 14, 15,
# 17; 195 slices). finetune and rehearse validate on the source run's validation cases (its
# split.json), which tune their threshold as they tuned the source's; scratch has none, so its
# best.pt is the last epoch at threshold 0.5. Budget: 20 steps of batch 8. Augmentation as the
# robust arm.
# SEED (default 0) draws the N slices (the same for finetune and scratch) and seeds the run;
# LR (default 0.001, the rate the adaptation of docs/cross_source.md was measured with; the
# training rate of configs/covid_ct.yaml is 0.003 since session 6) is the peak learning rate.
# STEPS (default 20) is the budget in steps of batch 8. Non-default values add _STEPSst / _lrX /
# _sK to the run name.
set -euo pipefail
cd "$(dirname "$0")/.."
N=$1; MODE=$2
PY=${PY:-.venv/bin/python}
SEED=${SEED:-0}
LR=${LR:-0.001}
STEPS=${STEPS:-20}
NAME="xs_adapt_${MODE}_${N}"
if [ "$STEPS" != 20 ]; then NAME="${NAME}_${STEPS}st"; fi
if [ "$LR" != 0.001 ]; then NAME="${NAME}_lr${LR}"; fi
if [ "$SEED" != 0 ]; then NAME="${NAME}_s${SEED}"; fi
source scripts/robust_augment.sh
INIT=()
TRAIN="case11, case13, case16"
VAL=""
if [ "$MODE" != scratch ]; then  # the source run's validation cases tune the threshold, as for the source
  VAL=$(python3 -c "import json, pathlib, sys; print(', '.join(json.loads((pathlib.Path(sys.argv[1]).parent / 'split.json').read_text())['val']))" "$3")
fi
case $MODE in
  finetune) INIT=(--init-from "$3") ;;
  rehearse) INIT=(--init-from "$3" --set "data.rehearse_from=$3") ;;
  scratch) ;;
  *) echo "unknown mode $MODE" >&2; exit 2 ;;
esac
exec "$PY" train.py --config configs/covid_ct.yaml --set model.encoder=mobilesam_tinyvit "${INIT[@]}" \
  --set data.split.mode=list --set "data.split.train=[$TRAIN]" --set "data.split.val=[$VAL]" \
  --set "data.split.test=[case10, case12, case14, case15, case17]" --set data.max_train_slices="$N" \
  --set train.epochs=1 --set train.steps_per_epoch="$STEPS" --set train.warmup_steps=5 --set train.threads=1 \
  "${INTENSITY[@]}" "${GEOMETRIC[@]}" \
  --set seed="$SEED" --set train.lr="$LR" --set name="$NAME"
