"""LiteMedSAM and MobileSAM: SAM1-layout checkpoints (TinyViT image encoder + neck, SAM prompt
encoder and mask decoder).

The encoder is ours (:mod:`s2unet.models.encoders.tinyvit`); the neck, prompt encoder, two-way
transformer and mask decoder are the ``sam2`` package's own modules configured the SAM1 way (no
high-resolution features, no object-score token, IoU head without sigmoid). Their tensors load
strictly from the SAM1 keys; the only renaming is the transformer MLP (SAM1 ``mlp.lin1/lin2`` =
sam2 ``mlp.layers.0/1``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..models.encoders import create_encoder
from ..models.sam_head import LITEMEDSAM, MOBILESAM, SamHead, SamVariant  # noqa: F401 (re-exported)
from ..weights import load_checkpoint_file, resolve_checkpoint
from .predictor_base import PromptedPredictor


@dataclass(frozen=True)
class SamFrame:
    """How an image maps into the square input of a SAM1-style model.

    SAM's ResizeLongestSide: scale the longest side to ``size``, round the other, pad the
    bottom and right.

    Attributes:
        orig_hw: the image's (H, W).
        input_hw: the resized (h, w) before padding.
        size: the square input side.
    """

    orig_hw: tuple[int, int]
    input_hw: tuple[int, int]
    size: int

    @classmethod
    def of(cls, orig_hw: tuple[int, int], size: int) -> "SamFrame":
        scale = size / max(orig_hw)
        return cls(tuple(orig_hw), (int(orig_hw[0] * scale + 0.5), int(orig_hw[1] * scale + 0.5)), size)

    def coords(self, xy: np.ndarray) -> np.ndarray:
        """Pixel (x, y) coordinates (any leading shape) in the model's input frame."""
        (h, w), (nh, nw) = self.orig_hw, self.input_hw
        return np.asarray(xy, dtype=np.float32) * np.array([nw / w, nh / h], dtype=np.float32)

    def boxes(self, boxes: np.ndarray) -> np.ndarray:
        """(K, 4) boxes in the model's input frame."""
        return self.coords(np.asarray(boxes).reshape(-1, 2, 2)).reshape(-1, 4)


def sam1_preprocess(
    image: np.ndarray, size: int, minmax: bool, mean: Sequence[float], std: Sequence[float]
) -> tuple[torch.Tensor, SamFrame]:
    """The SAM1-style model input for an image.

    Resize the longest side to ``size`` (bilinear, antialiased when shrinking), optionally
    min-max rescale to 0..1 (LiteMedSAM), normalise ``(x - mean) / std`` in 0..1 units (SAM's
    pixel statistics for MobileSAM; identity for LiteMedSAM), then zero-pad bottom and right
    to ``size`` x ``size`` (after normalisation, as SAM pads).

    Args:
        image: (H, W, 3) float image in 0..1.
        size: the square input side.
        minmax: rescale the resized image to its own min..max first.
        mean: per-channel mean of 0..1 input.
        std: per-channel std of 0..1 input.

    Returns:
        (1, 3, size, size) tensor and the frame that maps coordinates into it.
    """
    frame = SamFrame.of(image.shape[:2], size)
    x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None].float()
    if frame.input_hw != frame.orig_hw:
        shrink = frame.input_hw[0] < frame.orig_hw[0]
        x = F.interpolate(x, size=frame.input_hw, mode="bilinear", align_corners=False, antialias=shrink)
    if minmax:
        lo, hi = x.amin(), x.amax()
        x = (x - lo) / torch.clamp(hi - lo, min=1e-8)
    x = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    return F.pad(x, (0, size - frame.input_hw[1], 0, size - frame.input_hw[0])), frame


def sam1_postprocess(low_res: torch.Tensor, frame: SamFrame) -> torch.Tensor:
    """(K, 1, 256, 256) decoder logits -> (K, H, W) logits at image size: upscale to the
    input square, crop the padding, resize to the image (bilinear, as SAM does)."""
    x = F.interpolate(low_res, size=(frame.size, frame.size), mode="bilinear", align_corners=False)
    x = x[..., : frame.input_hw[0], : frame.input_hw[1]]
    return F.interpolate(x, size=frame.orig_hw, mode="bilinear", align_corners=False)[:, 0]


class SamTinyViTPredictor(PromptedPredictor):
    """LiteMedSAM or MobileSAM: our TinyViT encoder + SAM neck, prompt encoder and decoder.

    Args:
        variant: :data:`LITEMEDSAM` or :data:`MOBILESAM`.
        checkpoint: a checkpoint path or manifest key; the variant's default when None.
        device: torch device.
    """

    def __init__(self, variant: SamVariant, checkpoint: Optional[str] = None, device: str = "cpu") -> None:
        super().__init__()
        self.variant = variant
        self.name = variant.name
        self.device = torch.device(device)
        path = resolve_checkpoint(checkpoint or variant.checkpoint)
        # create_encoder verifies the digest of manifest files and loads the trunk strictly.
        self.encoder = create_encoder(variant.encoder, checkpoint or "default").eval().to(self.device)
        state = load_checkpoint_file(path)
        state = state.get("model", state)
        self.head = SamHead(self.encoder.out_channels[-1], variant.image_size).eval().to(self.device)
        self.head.load_sam1(state, path.name)
        for p in self.head.parameters():
            p.requires_grad_(False)
        self._embedding: Optional[torch.Tensor] = None
        self._frame: Optional[SamFrame] = None

    def preprocess(self, image: np.ndarray) -> tuple[torch.Tensor, SamFrame]:
        """:func:`sam1_preprocess` with this model's size, min-max step and encoder statistics."""
        return sam1_preprocess(image, self.variant.image_size, self.variant.minmax, self.encoder.mean, self.encoder.std)

    def _mask_to_low_res(self, mask: torch.Tensor) -> torch.Tensor:
        # SAM1's frame: resized like the image (longest side), zero-padded bottom and right.
        assert self._frame is not None
        frame, r = self._frame, self.low_res_size
        x = F.interpolate(mask, size=frame.input_hw, mode="area")
        x = F.pad(x, (0, frame.size - frame.input_hw[1], 0, frame.size - frame.input_hw[0]))
        return F.interpolate(x, size=(r, r), mode="area")

    @torch.inference_mode()
    def _embed(self, image: np.ndarray) -> None:
        x, frame = self.preprocess(image)
        features = self.encoder(x.to(self.device))[-1]
        self._embedding = self.head.neck(features)
        self._frame = frame

    @torch.inference_mode()
    def _predict(self, boxes, points, labels, mask_input, multimask):  # noqa: D102 (see base)
        assert self._frame is not None and self._embedding is not None
        dev = self.device
        box_t = torch.from_numpy(self._frame.boxes(boxes)).to(dev) if boxes is not None else None
        pts = None
        if points is not None:
            pts = (torch.from_numpy(self._frame.coords(points)).to(dev), torch.from_numpy(labels).to(dev))
        masks = torch.from_numpy(mask_input).to(dev) if mask_input is not None else None
        pe = self.head.prompt_encoder
        sparse, dense = pe(points=pts, boxes=box_t, masks=masks)
        low, iou, _, _ = self.head.mask_decoder(
            image_embeddings=self._embedding,
            image_pe=pe.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask,
            repeat_image=True,
        )
        if multimask:
            best = iou.argmax(dim=1)
            low = low[torch.arange(len(low)), best][:, None]
        return sam1_postprocess(low, self._frame).cpu().numpy(), low.cpu().numpy()
