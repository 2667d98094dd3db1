#!/usr/bin/env bash
# Few-label adaptation of issues #15 and #22: a coronacases-trained model fine-tuned on N labelled
# slices of radiopaedia cases, against the same N slices from scratch (same budget).
#   [SEED=K] [LR=X] [STEPS=S] bash scripts/adapt_curve.sh N finetune|rehearse SOURCE/best.pt   |   ... N scratch
#   [SEEDS="0 1 2"] [SIZES="5 10 20"] [STEPS=60] bash scripts/adapt_curve.sh curve SOURCE/best.pt
# rehearse: fine-tunes on the N slices and the source model's own training cases together,
# half of the draws from each (data.rehearse_from), so the source is not forgotten.
# Labelled pool: case11, case13, case16 (172 slices); N of them are drawn (seeded, nested:
# the 5 slices are among the 10...). Scored on the other radiopaedia cases (case10, 12, 14, 15,
# 17; 195 slices). finetune and rehearse validate on the source run's validation cases (its
# split.json), which tune their threshold as they tuned the source's; scratch has none, so its
# best.pt is the last epoch at threshold 0.5. Budget: STEPS steps of batch 8. Augmentation as the
# robust arm.
# Single runs: SEED (default 0) draws the N slices (data.max_train_slices; the same for finetune
# and scratch) and seeds the run; LR (default 0.001, the rate the adaptation of
# docs/cross_source.md was measured with; the training rate of configs/covid_ct.yaml is 0.003
# since session 6) is the peak learning rate. STEPS defaults to 20. Non-default values add
# _STEPSst / _lrX / _sK to the run name.
# curve (issue #22): for every seed of SEEDS and N of SIZES, the N slices are written as the label
# app saves them (runs/adapt_labels/N_sK: labelled_slices.json beside the masks, by
# bench/adapt_curve.py labels), then a rehearse and a scratch run train on that folder at the
# shipped learning rate (configs/covid_ct.yaml train.lr) for STEPS (default 60) steps, named
# xs_curve_ARM_N_STEPSst_sK; bench/adapt_curve.py report then writes
# bench/results/adapt_curve.json/.md (with the unadapted model on the same test cases).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
POOL="case11, case13, case16"
TEST="case10, case12, case14, case15, case17"
source scripts/robust_augment.sh

# The source run's validation cases, which tune the adapted models' threshold as they tuned the source's.
source_val() {
  python3 -c "import json, pathlib, sys; print(', '.join(json.loads((pathlib.Path(sys.argv[1]).parent / 'split.json').read_text())['val']))" "$1"
}

# run_one NAME MODE SOURCE TRAIN_CASES [--set ...]: one adaptation run (foreground).
run_one() {
  local name=$1 mode=$2 src=$3 train=$4 val="" init=()
  shift 4
  case $mode in
    finetune) init=(--init-from "$src") ;;
    rehearse) init=(--init-from "$src" --set "data.rehearse_from=$src") ;;
    scratch) ;;
    *) echo "unknown mode $mode" >&2; exit 2 ;;
  esac
  if [ "$mode" != scratch ]; then val=$(source_val "$src"); fi
  "$PY" train.py --config configs/covid_ct.yaml --set model.encoder=mobilesam_tinyvit "${init[@]}" \
    --set data.split.mode=list --set "data.split.train=[$train]" --set "data.split.val=[$val]" \
    --set "data.split.test=[$TEST]" --set train.epochs=1 --set train.steps_per_epoch="$STEPS" \
    --set train.warmup_steps=5 --set train.threads=1 "${INTENSITY[@]}" "${GEOMETRIC[@]}" \
    --set seed="$SEED" --set name="$name" "$@"
}

if [ "$1" = curve ]; then
  SRC=$2
  SEEDS=${SEEDS:-0 1 2}
  SIZES=${SIZES:-5 10 20}
  STEPS=${STEPS:-60}
  for SEED in $SEEDS; do
    for N in $SIZES; do
      LABELS="$PWD/runs/adapt_labels/${N}_s${SEED}"
      rm -rf "$LABELS"  # a folder of the same draw from an earlier curve: written afresh
      TRAIN=$("$PY" bench/adapt_curve.py labels --pool "$POOL" --n "$N" --seed "$SEED" --out "$LABELS")
      for MODE in rehearse scratch; do
        run_one "xs_curve_${MODE}_${N}_${STEPS}st_s${SEED}" "$MODE" "$SRC" "$TRAIN" --set "data.root=$LABELS"
      done
    done
  done
  exec "$PY" bench/adapt_curve.py report --checkpoint "$SRC" --runs runs --sizes "$SIZES" --seeds "$SEEDS" --steps "$STEPS"
fi

N=$1; MODE=$2
SEED=${SEED:-0}
LR=${LR:-0.001}
STEPS=${STEPS:-20}
NAME="xs_adapt_${MODE}_${N}"
if [ "$STEPS" != 20 ]; then NAME="${NAME}_${STEPS}st"; fi
if [ "$LR" != 0.001 ]; then NAME="${NAME}_lr${LR}"; fi
if [ "$SEED" != 0 ]; then NAME="${NAME}_s${SEED}"; fi
run_one "$NAME" "$MODE" "${3:-}" "$POOL" --set data.max_train_slices="$N" --set train.lr="$LR"
