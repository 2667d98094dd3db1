"""s2unet: frozen SAM2 Hiera / SAM-family encoders with LoRA stage adapters and an
attention-gated U-Net decoder for X-ray and CT lesion segmentation.

Importing the package changes no process state; the command-line entry points set the OpenMP
wait policy and the allocator behaviour explicitly (:mod:`s2unet.runtime`).
"""

__version__ = "0.1.0"
