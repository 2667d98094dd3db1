#!/usr/bin/env bash
# Every checkpoint the comparison configs read (issue #14), trained with one budget per task:
#   bash scripts/compare_runs.sh cxr|ct
# X-ray lungs: 3 epochs x 8 steps of batch 8 (24 steps); CT infection: 4 x 10 (40 steps), at
# train.lr 0.001 (the rate of configs/covid_ct.yaml when docs/compare.md was measured; 0.003 since).
# s2unet, monai U-Net, DeepLabV3+ (smp, from scratch: no ImageNet weights offline) and MobileSAM
# fine-tuned with box prompts in the three trainable-part settings (docs/finetune_sam.md).
# Then: python -m s2unet compare --config configs/compare_cxr_lung.yaml | compare_covid_ct.yaml
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
THREADS=${THREADS:-1}
case $1 in
  cxr) CFG=configs/cxr_lung.yaml; P=cxr_lung; BUDGET=(--set train.epochs=3 --set train.steps_per_epoch=8) ;;
  ct) CFG=configs/covid_ct.yaml; P=covid_ct; BUDGET=(--set train.epochs=4 --set train.steps_per_epoch=10 --set train.lr=0.001) ;;
  *) echo "usage: $0 cxr|ct" >&2; exit 2 ;;
esac
COMMON=(--config "$CFG" --set model.encoder=mobilesam_tinyvit "${BUDGET[@]}" --set train.warmup_steps=5 --set train.threads="$THREADS")
SAM=(--set model.arch=prompted_sam --set model.adapter.placement=none --set loss.name=dice_focal --set train.lr=0.0003)
run() { local name=$1; shift; [ -e "runs/$name-latest/summary.json" ] || "$PY" train.py "${COMMON[@]}" "$@" --set name="$name"; }
run "$P"
run "${P}_unet" --set model.arch=unet
run "${P}_deeplabv3plus" --set model.arch=deeplabv3plus
run "${P}_sam_enclora" "${SAM[@]}" --set model.attention_lora.enabled=true --set model.prompted.decoder=none
run "${P}_sam_dec" "${SAM[@]}" --set model.prompted.decoder=full
run "${P}_sam_both" "${SAM[@]}" --set model.attention_lora.enabled=true --set model.prompted.decoder=full
