"""s2unet: frozen SAM2 Hiera / SAM-family encoders with LoRA stage adapters and an
attention-gated U-Net decoder for X-ray and CT lesion segmentation."""
import os

# Idle OpenMP threads spin by default; on a shared CPU that spinning cost 1.3-4x in training
# step time (bench/results/investigation.md). Set before torch loads its OpenMP runtime.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
