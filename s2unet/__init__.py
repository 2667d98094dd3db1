"""s2unet: frozen SAM2 Hiera / SAM-family encoders with LoRA stage adapters and an
attention-gated U-Net decoder for X-ray and CT lesion segmentation.

Importing the package changes no process state and loads nothing heavy; the command-line entry
points set the OpenMP wait policy and the allocator behaviour explicitly (:mod:`s2unet.runtime`).
The Python API (``s2unet.load``, :mod:`s2unet.api`) is imported on first use.
"""

__version__ = "0.1.0"
__all__ = ["load", "Segmenter", "Prediction"]


def __getattr__(name: str):
    if name in __all__:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 's2unet' has no attribute {name!r}")
