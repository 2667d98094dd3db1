"""``python -m s2unet export``: a trained checkpoint as an ONNX file or a ``torch.export`` program.

What is exported is the inference graph only: a (B, 3, S, S) image batch in 0..1 (S the
checkpoint's ``data.image_size``; the encoder's normalisation is inside) to the final head's
logits (B, C, S, S), not the deep-supervision heads. The batch dimension is dynamic. Both go
through ``torch.export`` (the ONNX file through PyTorch's dynamo exporter, which needs ``onnx``
and ``onnxscript``): the TorchScript exporters cannot trace the encoders. The file carries what
inference needs beside the graph (run config with the preprocessing, threshold, metrics): ONNX
in its ``metadata_props`` (read by :func:`s2unet.models.onnx_model.load_onnx_model`), the
exported program as an extra file ``s2unet.json``. Text-prompted and prompted-SAM checkpoints
take a second input and are refused.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Union

import torch
from torch import nn

from .. import __version__
from ..io import atomic_path
from ..models.base import SegmentationModel
from ..models.checkpoint import load_model_checkpoint
from ..models.onnx_model import METADATA_KEY
from ..weights import CheckpointError

FORMATS = ("onnx", "exported-program")
PathLike = Union[str, Path]


class FinalLogits(nn.Module):
    """The inference graph of a model: images to the final logits only."""

    def __init__(self, model: SegmentationModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.model.predict_logits(image)


def export_model(checkpoint: PathLike, fmt: str, output: PathLike) -> Path:
    """Export ``checkpoint`` to ``output`` in format ``fmt`` (see the module docstring).

    Args:
        checkpoint: an s2unet ``best.pt``.
        fmt: ``onnx`` or ``exported-program``.
        output: the file to write (atomically).

    Returns:
        The written path.

    Raises:
        CheckpointError: an unknown format, or a checkpoint whose model takes more than images.
    """
    if fmt not in FORMATS:
        raise CheckpointError(f"--format {fmt!r} is not one of {', '.join(FORMATS)}")
    loaded = load_model_checkpoint(checkpoint, torch.device("cpu"))
    if loaded.text is not None or loaded.model.trains_with_target:
        raise CheckpointError(f"{checkpoint}: a text-prompted or prompted-SAM model takes phrases or prompts beside the "
                              "image; only image-only models are exported")
    loaded.model.merge_lora()
    wrapper = FinalLogits(loaded.model).eval()
    size = loaded.config.data.image_size
    example = (torch.rand(2, 3, size, size),)
    dynamic = {"image": {0: torch.export.Dim("batch", min=1, max=1024)}}
    meta = json.dumps({"config": loaded.config.to_dict(), "threshold": loaded.threshold, "metrics": loaded.metrics,
                       "s2unet_version": __version__, "checkpoint": str(checkpoint)})
    out = Path(output)
    with torch.no_grad(), atomic_path(out) as tmp:
        if fmt == "onnx":
            import onnx

            program = torch.onnx.export(wrapper, example, dynamo=True, dynamic_shapes=dynamic, input_names=["image"],
                                        output_names=["logits"], verbose=False)
            proto = program.model_proto
            entry = proto.metadata_props.add()
            entry.key, entry.value = METADATA_KEY, meta
            onnx.save(proto, str(tmp))
        else:
            program = torch.export.export(wrapper, example, dynamic_shapes=dynamic)
            torch.export.save(program, str(tmp), extra_files={"s2unet.json": meta})
    return out
