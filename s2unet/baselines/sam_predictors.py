"""Zero-shot prompted SAM-family predictors behind one interface, and their registry.

* ``litemedsam`` / ``mobilesam``: SAM1-layout checkpoints (TinyViT image encoder + neck, SAM
  prompt encoder and mask decoder). The encoder is ours (:mod:`s2unet.models.encoders.tinyvit`);
  the neck, prompt encoder, two-way transformer and mask decoder are the ``sam2`` package's
  own modules configured the SAM1 way (no high-resolution features, no object-score token,
  IoU head without sigmoid). Their tensors load strictly from the SAM1 keys; the only
  renaming is the transformer MLP (SAM1 ``mlp.lin1/lin2`` = sam2 ``mlp.layers.0/1``).
* ``sam2*`` / ``sam2.1*``: the ``sam2`` package's ``SAM2ImagePredictor`` on an official
  checkpoint (not downloadable on these machines: building raises
  :class:`~s2unet.weights.CheckpointNotFoundError`).

Every predictor embeds an image once (``set_image``) and then answers any number of prompts
(``predict``), which iterative correction needs.
"""
from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable, Hashable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..weights import CheckpointError, load_checkpoint_file, resolve_checkpoint
from .prompts import Prompts



def as_rgb01(image01: np.ndarray) -> np.ndarray:
    """An (H, W) or (H, W, 3) image in 0..1 as float32 (H, W, 3)."""
    img = np.asarray(image01, dtype=np.float32)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected an (H, W) or (H, W, 3) image, got shape {img.shape}")
    return img


def _as_objects(
    boxes: Optional[np.ndarray], points: Optional[np.ndarray], labels: Optional[np.ndarray]
) -> tuple[Optional[np.ndarray], Optional[np.ndarray], Optional[np.ndarray]]:
    """Normalise prompts to (K, 4) boxes, (K, N, 2) points and (K, N) labels."""
    if boxes is not None:
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    if (points is None) != (labels is None):
        raise ValueError("points need labels and labels need points")
    if points is not None:
        points = np.asarray(points, dtype=np.float32)
        labels = np.asarray(labels, dtype=np.int64)
        if points.ndim == 2:  # (N, 2): the points of one object
            points, labels = points[None], labels.reshape(1, -1)
        if points.ndim != 3 or points.shape[-1] != 2 or labels.shape != points.shape[:2]:
            raise ValueError(f"points must be (K, N, 2) with (K, N) labels, got {points.shape} and {labels.shape}")
        if boxes is not None and len(boxes) != len(points):
            raise ValueError(f"{len(boxes)} boxes but {len(points)} point groups: one of each per object")
    if boxes is None and points is None:
        raise ValueError("predict needs boxes or points")
    return boxes, points, labels


def _wants_multimask(boxes: Optional[np.ndarray], points: Optional[np.ndarray], mask_input: Optional[np.ndarray]) -> bool:
    """SAM's convention: one lone point is ambiguous, so take the best of three masks; a mask
    prompt removes the ambiguity (the point corrects that mask)."""
    return boxes is None and mask_input is None and points is not None and points.shape[1] == 1


# Magnitude of the logits a binary mask becomes as a mask prompt: SAM's own low-resolution
# logits of a confident answer sit around +-10 away from the object's border.
MASK_PROMPT_LOGIT = 10.0


class PromptedPredictor(ABC):
    """Embed an image once, then predict masks for prompts.

    Attributes:
        name: registry name.
        trainable_parameters: 0 (zero-shot).
        max_objects_per_batch: objects decoded together (memory bound for many prompts).
        low_res_size: side r of the low-resolution logits (256 at the models' own sizes).
    """

    name: str = "prompted"
    trainable_parameters: int = 0
    max_objects_per_batch: int = 16
    low_res_size: int = 256  # side of the decoder's low-res logits: 4 x the 64 x 64 embedding

    def __init__(self) -> None:
        self._key: Optional[Hashable] = None
        self._embed_seconds = 0.0
        self._hw: Optional[tuple[int, int]] = None

    def set_image(self, image01: np.ndarray, key: Optional[Hashable] = None) -> float:
        """Embed an image (skipped when ``key`` names the image embedded last).

        Args:
            image01: (H, W) or (H, W, 3) image in 0..1.
            key: an identity for the image (e.g. ``(case, slice)``); with the key of the
                current image the cached embedding is kept.

        Returns:
            The seconds the embedding took (the original time when served from the cache), so
            callers can charge it to every method that needs it.
        """
        if key is not None and key == self._key:
            return self._embed_seconds
        img = as_rgb01(image01)
        t0 = time.perf_counter()
        self._embed(img)
        self._embed_seconds = time.perf_counter() - t0
        self._key, self._hw = key, img.shape[:2]
        return self._embed_seconds

    def predict(
        self,
        boxes: Optional[np.ndarray] = None,
        points: Optional[np.ndarray] = None,
        labels: Optional[np.ndarray] = None,
        mask_input: Optional[np.ndarray] = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Segment K objects on the current image.

        Args:
            boxes: (K, 4) or (4,) boxes ``[x0, y0, x1, y1]`` in image pixels.
            points: (K, N, 2) points ``(x, y)`` in image pixels, or (N, 2) for one object.
            labels: (K, N) / (N,) point labels, 1 foreground, 0 background.
            mask_input: (K, 1, r, r) low-resolution logits of a previous ``predict``.

        Returns:
            ``(prob, low_res_logits)``: (H, W) float32 foreground probability, the maximum
            over the K objects (their union at 0.5), and (K, 1, r, r) logits (r =
            ``low_res_size``). A lone point per object returns the best of SAM's three masks
            by predicted IoU.
        """
        if self._hw is None:
            raise RuntimeError("call set_image before predict")
        boxes, points, labels = _as_objects(boxes, points, labels)
        k = len(boxes) if boxes is not None else len(points)
        if mask_input is not None:
            r = self.low_res_size
            mask_input = np.asarray(mask_input, dtype=np.float32).reshape(-1, 1, r, r)
            if len(mask_input) != k:
                raise ValueError(f"mask_input holds {len(mask_input)} masks for {k} objects")
        multimask = _wants_multimask(boxes, points, mask_input)
        prob: Optional[np.ndarray] = None
        low_res = []
        # Objects go through the decoder in chunks: a draft mask full of speckle can ask for
        # hundreds of boxes, and each object costs a full-size copy of the image embedding.
        for start in range(0, k, self.max_objects_per_batch):
            part = slice(start, start + self.max_objects_per_batch)
            logits, low = self._predict(
                boxes[part] if boxes is not None else None,
                points[part] if points is not None else None,
                labels[part] if labels is not None else None,
                mask_input[part] if mask_input is not None else None,
                multimask,
            )
            chunk = torch.sigmoid(torch.from_numpy(logits)).amax(dim=0).numpy()
            prob = chunk if prob is None else np.maximum(prob, chunk)
            low_res.append(low)
        assert prob is not None
        return prob.astype(np.float32), np.concatenate(low_res)

    def predict_prompts(
        self, prompts: Prompts, mask_input: Optional[np.ndarray] = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`predict` for a :class:`Prompts`; no object gives an all-zero probability."""
        if prompts.n_objects == 0:
            assert self._hw is not None, "call set_image before predict_prompts"
            r = self.low_res_size
            return np.zeros(self._hw, dtype=np.float32), np.zeros((0, 1, r, r), np.float32)
        return self.predict(prompts.boxes, prompts.points, prompts.labels, mask_input)

    def mask_prompt(self, mask: np.ndarray) -> np.ndarray:
        """A mask made elsewhere (a draft, a hand-edited mask) as this model's mask prompt.

        Args:
            mask: (H, W) mask of the current image (bool, or 0..1 coverage).

        Returns:
            (1, 1, r, r) float32 logits, +-:data:`MASK_PROMPT_LOGIT` inside / outside, for
            ``predict(..., mask_input=...)``.
        """
        if self._hw is None:
            raise RuntimeError("call set_image before mask_prompt")
        m = np.asarray(mask, dtype=np.float32)
        if m.shape != self._hw:
            raise ValueError(f"mask shape {m.shape} differs from the image's {self._hw}")
        coverage = self._mask_to_low_res(torch.from_numpy(np.ascontiguousarray(m))[None, None])
        return ((coverage * 2.0 - 1.0) * MASK_PROMPT_LOGIT).numpy().astype(np.float32)

    def _mask_to_low_res(self, mask: torch.Tensor) -> torch.Tensor:
        """(1, 1, H, W) coverage -> (1, 1, r, r) coverage in the model's low-resolution frame.

        This default is SAM2's frame: the image resized to the square input without keeping
        its aspect. Models that pad (SAM1) override it.
        """
        r = self.low_res_size
        return F.interpolate(mask, size=(r, r), mode="area")

    @abstractmethod
    def _embed(self, image: np.ndarray) -> None:
        """Compute and keep the embedding of an (H, W, 3) float32 image in 0..1."""

    @abstractmethod
    def _predict(
        self,
        boxes: Optional[np.ndarray],
        points: Optional[np.ndarray],
        labels: Optional[np.ndarray],
        mask_input: Optional[np.ndarray],
        multimask: bool,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Returns (K, H, W) logits at image size and (K, 1, r, r) low-res logits."""


# ------------------------------------------------------------------------------ SAM1 layout
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


@dataclass(frozen=True)
class SamVariant:
    """One SAM1-layout model family.

    Attributes:
        name: registry name.
        encoder: the TinyViT encoder registered in :mod:`s2unet.models.encoders`.
        checkpoint: manifest key of its checkpoint.
        image_size: square input side.
        minmax: rescale each image to its own min..max before normalising (LiteMedSAM's
            preprocessing; SAM's is fixed pixel statistics only).
    """

    name: str
    encoder: str
    checkpoint: str
    image_size: int
    minmax: bool


LITEMEDSAM = SamVariant("litemedsam", "litemedsam_tinyvit", "lite_medsam", 256, minmax=True)
MOBILESAM = SamVariant("mobilesam", "mobilesam_tinyvit", "mobile_sam", 1024, minmax=False)


class SamHead(nn.Module):
    """SAM's neck, prompt encoder and mask decoder, built from the ``sam2`` package's modules.

    Args:
        in_channels: channels of the encoder's last feature map (320 for TinyViT).
        image_size: square input side (sets the prompt encoder's coordinate frame).
        embed_size: side of the image embedding (64 for both TinyViT models).
    """

    def __init__(self, in_channels: int, image_size: int, embed_size: int = 64) -> None:
        super().__init__()
        from sam2.modeling.sam.mask_decoder import MaskDecoder
        from sam2.modeling.sam.prompt_encoder import PromptEncoder
        from sam2.modeling.sam.transformer import TwoWayTransformer
        from sam2.modeling.sam2_utils import LayerNorm2d

        dim = 256
        self.neck = nn.Sequential(
            nn.Conv2d(in_channels, dim, 1, bias=False),
            LayerNorm2d(dim),
            nn.Conv2d(dim, dim, 3, padding=1, bias=False),
            LayerNorm2d(dim),
        )
        self.prompt_encoder = PromptEncoder(
            embed_dim=dim,
            image_embedding_size=(embed_size, embed_size),
            input_image_size=(image_size, image_size),
            mask_in_chans=16,
        )
        self.mask_decoder = MaskDecoder(
            transformer_dim=dim,
            transformer=TwoWayTransformer(depth=2, embedding_dim=dim, num_heads=8, mlp_dim=2048),
            num_multimask_outputs=3,
            iou_head_depth=3,
            iou_head_hidden_dim=256,
            use_high_res_features=False,
            iou_prediction_use_sigmoid=False,
            pred_obj_scores=False,
        )

    @staticmethod
    def sam1_keys_to_ours(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Pick and rename a SAM1-layout state dict's neck, prompt encoder and decoder tensors.

        Args:
            state: the whole checkpoint state dict (``image_encoder.*``, ``prompt_encoder.*``,
                ``mask_decoder.*``).

        Returns:
            The tensors keyed as in this module's ``state_dict()``.
        """
        out = {}
        for key, value in state.items():
            if key.startswith("image_encoder.neck."):
                out[key.removeprefix("image_encoder.")] = value
            elif key.startswith("prompt_encoder."):
                out[key] = value
            elif key.startswith("mask_decoder."):
                # SAM1's MLPBlock names its layers lin1/lin2; sam2 uses its generic MLP.
                out[key.replace(".mlp.lin1.", ".mlp.layers.0.").replace(".mlp.lin2.", ".mlp.layers.1.")] = value
        return out

    def load_sam1(self, state: dict[str, torch.Tensor], source: str) -> None:
        """Load strictly from a SAM1-layout state dict.

        Raises:
            CheckpointError: missing, unexpected or mis-shaped tensors.
        """
        try:
            self.load_state_dict(self.sam1_keys_to_ours(state), strict=True)
        except RuntimeError as err:
            raise CheckpointError(
                f"{source} does not fit the SAM neck / prompt encoder / mask decoder: {err}"
            ) from None


class SamTinyViTPredictor(PromptedPredictor):
    """LiteMedSAM or MobileSAM: our TinyViT encoder + SAM neck, prompt encoder and decoder.

    Args:
        variant: :data:`LITEMEDSAM` or :data:`MOBILESAM`.
        checkpoint: a checkpoint path or manifest key; the variant's default when None.
        device: torch device.
    """

    def __init__(self, variant: SamVariant, checkpoint: Optional[str] = None, device: str = "cpu") -> None:
        super().__init__()
        from ..models.encoders import create_encoder

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


# ------------------------------------------------------------------------------------- SAM2
_SAM2_CONFIG_SIZES = {"tiny": "t", "small": "s", "base_plus": "b+", "large": "l"}


def sam2_config_name(key: str) -> str:
    """The ``sam2`` package's Hydra config for a checkpoint key such as ``sam2.1_hiera_tiny``."""
    family, _, size = key.partition("_hiera_")
    if family not in ("sam2", "sam2.1") or size not in _SAM2_CONFIG_SIZES:
        raise KeyError(f"not an official SAM2 checkpoint key: {key!r}")
    return f"configs/{family}/{family}_hiera_{_SAM2_CONFIG_SIZES[size]}.yaml"


class SAM2Predictor(PromptedPredictor):
    """An official SAM2 / SAM2.1 image model through the ``sam2`` package's own predictor.

    Args:
        key: ``sam2[.1]_hiera_{tiny,small,base_plus,large}``.
        checkpoint: a checkpoint path; the official file looked up in the weights folders
            when None.
        device: torch device.
        image_size: run at another square input size than the config's 1024 (a multiple of
            32; for checkpoints fine-tuned at another size, e.g. 512, or quick tests).

    Raises:
        CheckpointNotFoundError: the checkpoint is not on disk.
    """

    def __init__(
        self, key: str, checkpoint: Optional[str] = None, device: str = "cpu", image_size: Optional[int] = None
    ) -> None:
        super().__init__()
        from sam2.build_sam import build_sam2
        from sam2.sam2_image_predictor import SAM2ImagePredictor

        self.name = key
        config = sam2_config_name(key)
        path = resolve_checkpoint(checkpoint or key)
        overrides = [f"++model.image_size={int(image_size)}"] if image_size else []
        model = build_sam2(config, str(path), device=device, mode="eval", hydra_overrides_extra=overrides)
        self.predictor = SAM2ImagePredictor(model)
        if image_size:
            # SAM2ImagePredictor hard-codes the backbone map sizes of a 1024 input (strides 4,
            # 8, 16); nothing public sets them, so they follow the model's size here.
            side = int(image_size)
            self.predictor._bb_feat_sizes = [(side // s, side // s) for s in (4, 8, 16)]
        self.low_res_size = model.image_size // 4

    def _embed(self, image: np.ndarray) -> None:
        # SAM2ImagePredictor documents 0..255 HWC input (its ToTensor scales uint8 to 0..1).
        with torch.inference_mode():
            self.predictor.set_image(np.round(image * 255.0).astype(np.uint8))

    def _predict(self, boxes, points, labels, mask_input, multimask):  # noqa: D102 (see base)
        with torch.inference_mode():
            masks, iou, low = self.predictor.predict(
                point_coords=points, point_labels=labels, box=boxes, mask_input=mask_input,
                multimask_output=multimask, return_logits=True,
            )
        if masks.ndim == 3:  # the predictor squeezes a single object away
            masks, iou, low = masks[None], iou[None], low[None]
        best = iou.argmax(axis=1)
        k = np.arange(len(masks))
        return masks[k, best], low[k, best][:, None]


# ---------------------------------------------------------------------------------- registry
_REGISTRY: dict[str, Callable[..., PromptedPredictor]] = {
    "litemedsam": partial(SamTinyViTPredictor, LITEMEDSAM),
    "mobilesam": partial(SamTinyViTPredictor, MOBILESAM),
    **{
        f"{family}_hiera_{size}": partial(SAM2Predictor, f"{family}_hiera_{size}")
        for family in ("sam2", "sam2.1")
        for size in _SAM2_CONFIG_SIZES
    },
}


def predictor_names() -> list[str]:
    """Names :func:`create_predictor` accepts."""
    return list(_REGISTRY)


def create_predictor(
    name: str, checkpoint: Optional[str | Path] = None, device: str = "cpu", **options: Any
) -> PromptedPredictor:
    """Build a zero-shot prompted predictor by name.

    Args:
        name: one of :func:`predictor_names` (``litemedsam``, ``mobilesam``,
            ``sam2.1_hiera_tiny``...).
        checkpoint: a checkpoint file instead of the default one.
        device: torch device.
        **options: predictor-specific options (SAM2: ``image_size``).

    Returns:
        The predictor, weights loaded and frozen.

    Raises:
        KeyError: an unknown name.
        CheckpointNotFoundError: the checkpoint is not on disk.
        CheckpointError: the checkpoint does not fit.
    """
    if name not in _REGISTRY:
        import difflib

        close = difflib.get_close_matches(name, _REGISTRY, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise KeyError(f"unknown prompted predictor {name!r}{hint}; known: {', '.join(_REGISTRY)}")
    return _REGISTRY[name](checkpoint=str(checkpoint) if checkpoint is not None else None, device=device, **options)
