# The robustness augmentation of the issue #15 experiments, as --set arguments; sourced by
# scripts/cross_source.sh and scripts/adapt_curve.sh so that both use the same settings.
INTENSITY=(--set data.augment.brightness=0.15 --set data.augment.contrast=0.15 --set data.augment.gamma=0.3
           --set data.augment.blur_sigma=1.0 --set data.augment.noise_std=0.03 --set data.augment.clahe=0.25
           --set data.augment.window_jitter=0.1)
GEOMETRIC=(--set data.augment.crop_min=0.7 --set data.augment.zoom_out=0.25)
# Every flip and quarter turn equally likely (with the shipped hflip 0.5: vflip 0.5 and a turn by
# 1-3 quarters with probability 0.75 make all 8 orientations 1/8 each), for issue #22's question
# whether the orientation mix of the old headers bought robustness.
FLIPROT=(--set data.augment.hflip=0.5 --set data.augment.vflip=0.5 --set data.augment.rot90=0.75)
