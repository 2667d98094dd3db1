"""A prompted SAM-family model fine-tuned by the s2unet engine (``model.arch: prompted_sam``).

The frozen image encoder, prompt encoder and mask decoder come from the model's checkpoint
(sha256-checked where the digest is published): LiteMedSAM or MobileSAM (our TinyViT + the SAM
neck / prompt encoder / mask decoder) or an official SAM2 / SAM2.1 / MedSAM2 file (the ``sam2``
package's own model, its Hiera trunk ours). What trains is one of the three settings of the
published ablation:

* peft LoRA on the encoder's attention (``model.attention_lora.enabled``, decoder ``none``);
* the mask decoder (``model.prompted.decoder``: ``full``, or peft ``lora`` on its attention);
* both.

The model sees the engine's square (B, 3, S, S) inputs, S = ``data.image_size``; prompts are in
that frame. Each structure (output channel) of an image is one object with one prompt:

* ``box``: the box around the structure's reference mask (the training forward moves its sides
  by up to ``box_jitter`` of the box side; prediction uses the exact box, an oracle prompt);
* ``mean_points``: ``n_points`` fixed positive points of the mean training mask, derived once
  before training (:meth:`PromptedSam.fit_fixed_points`) and saved with the checkpoint, so no
  ground truth is needed at test time.

With ``clicks: N`` training draws 0..N correction rounds per object: each adds a click at the
centre of the largest error region of the previous round's prediction (whose low-resolution
logits become the next mask prompt), run without gradients; the loss is on the last round, as
SAM was trained. Random choices come from torch's generator, which the engine seeds and saves
for ``--resume``.
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import Iterable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from ..config import AttentionLoraConfig, PromptedConfig
from ..prompts import Prompts, box_around_mask, fixed_points_in_region, next_correction_click, region_of_mean_mask
from .adapters import attach_attention_lora, merge_attention_lora
from .base import SegmentationModel
from ..weights import load_state_strictly, read_encoder_checkpoint
from .encoders import Encoder, create_encoder, get_encoder_spec, load_encoder_state
from .sam_head import SAM_VARIANTS, SamHead

# Logits of a structure that has no prompt (an empty reference mask under box prompts): the
# model is not asked, the structure is absent.
EMPTY_LOGIT = -20.0
# The mask decoder's attention projections (sam2's TwoWayTransformer), for decoder LoRA.
DECODER_LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]


class Sam1Backbone(nn.Module):
    """LiteMedSAM / MobileSAM image embedding: TinyViT encoder + SAM neck (no high-resolution maps)."""

    def __init__(self, encoder: Encoder, neck: nn.Module) -> None:
        super().__init__()
        self.encoder, self.neck = encoder, neck
        self.lora_targets = encoder.attention_lora_targets

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(B, 3, S, S) normalised images -> ``[embedding (B, 256, S / s, S / s)]``."""
        self.encoder.check_input(x)
        return [self.neck(self.encoder(x)[-1])]


class Sam2Backbone(nn.Module):
    """SAM2 image embedding: the ``sam2`` image encoder (Hiera trunk + FPN neck) and the
    no-memory embedding SAM2 adds to a lone image's lowest-resolution map."""

    def __init__(self, image_encoder: nn.Module, no_mem_embed: torch.Tensor, lora_targets: str) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.no_mem_embed = nn.Parameter(no_mem_embed.detach().clone(), requires_grad=False)
        self.lora_targets = lora_targets

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(B, 3, S, S) normalised images -> the stride-4 and stride-8 maps and the embedding."""
        fpn = self.image_encoder(x)["backbone_fpn"]
        return [fpn[0], fpn[1], fpn[-1] + self.no_mem_embed.view(1, -1, 1, 1)]


class PromptedSam(SegmentationModel):
    """A SAM-family model prompted from reference masks or fixed points.

    Args:
        backbone: :class:`Sam1Backbone` or :class:`Sam2Backbone`, weights loaded.
        prompt_encoder: SAM's prompt encoder for the ``S`` x ``S`` input, weights loaded.
        mask_decoder: SAM's mask decoder, weights loaded.
        normalise: ``(mean, std, minmax)``: the image statistics of 0..1 input and whether each
            image is first min-max scaled to 0..1 (LiteMedSAM).
        prompted: the ``model.prompted`` section (decoder setting, prompts).
        attention_lora: the ``model.attention_lora`` section (encoder LoRA).
        out_channels: structures predicted, one object each.
    """

    trains_with_target = True

    def __init__(self, backbone: nn.Module, prompt_encoder: nn.Module, mask_decoder: nn.Module,
                 normalise: tuple[Sequence[float], Sequence[float], bool], prompted: PromptedConfig,
                 attention_lora: AttentionLoraConfig, out_channels: int) -> None:
        super().__init__()
        self.backbone, self.prompt_encoder, self.mask_decoder = backbone, prompt_encoder, mask_decoder
        self.settings, self.out_channels = prompted, out_channels
        for p in self.parameters():
            p.requires_grad_(False)
        # peft's new LoRA tensors require gradients.
        attach_attention_lora(backbone, attention_lora, backbone.lora_targets)
        if prompted.decoder == "full":
            for p in mask_decoder.parameters():
                p.requires_grad_(True)
            # One mask per prompt: the IoU head only ranks SAM's three ambiguous masks and the
            # object-score head (SAM2) gates video frames, so neither gets a gradient here.
            for head in ("iou_prediction_head", "pred_obj_score_head"):
                for p in getattr(mask_decoder, head, nn.Identity()).parameters():
                    p.requires_grad_(False)
        elif prompted.decoder == "lora":
            lora = AttentionLoraConfig(enabled=True, rank=prompted.decoder_lora_rank, alpha=prompted.decoder_lora_rank)
            attach_attention_lora(mask_decoder, lora, DECODER_LORA_TARGETS)
        self.encoder_trains = attention_lora.enabled
        mean, std, self.minmax = normalise
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        # Fixed points per structure, label -1 (SAM's padding point) until fitted.
        self.register_buffer("fixed_points", torch.zeros(out_channels, prompted.n_points, 2))
        self.register_buffer("fixed_labels", -torch.ones(out_channels, prompted.n_points, dtype=torch.long))

    # ------------------------------------------------------------------------------ state
    def train(self, mode: bool = True) -> "PromptedSam":
        super().train(mode)
        for module in self.backbone.modules():  # frozen BatchNorm keeps its pretrained statistics
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()
        return self

    def trained_state_dict(self) -> dict[str, torch.Tensor]:
        """The trained tensors and the fixed points; the frozen rest comes from the SAM checkpoint."""
        keep = {n for n, p in self.named_parameters() if p.requires_grad} | {"fixed_points", "fixed_labels"}
        return {k: v.detach().clone() for k, v in self.state_dict().items() if k in keep}

    def merge_lora(self) -> int:
        """Fold the encoder's and the decoder's LoRA into their weights; returns layers merged."""
        return merge_attention_lora(self.backbone) + merge_attention_lora(self.mask_decoder)

    def prepare(self, train_set: Dataset) -> None:
        """Derive the fixed points from the mean of the training set's un-augmented masks.

        Args:
            train_set: the engine's training dataset (items with a (C, S, S) ``mask``).
        """
        # The datasets augment in __getitem__ when they hold a transform; the mean is of the
        # masks as they are, so the transform is set aside for the pass.
        augment, train_set.augment = train_set.augment, None
        try:
            mean = mean_training_masks(train_set[i]["mask"] for i in range(len(train_set)))
        finally:
            train_set.augment = augment
        self.fit_fixed_points(mean)

    def score_notes(self) -> list[str]:
        """Box-prompted validation takes its boxes from the reference: an oracle score."""
        if self.settings.prompt != "box":
            return []
        return ["validation prompts are boxes around each case's reference mask (oracle, †): the scores are upper "
                "bounds, not comparable with models that need no prompt (model.prompted.prompt: mean_points needs none)"]

    def fit_fixed_points(self, mean_masks: np.ndarray) -> None:
        """Derive the fixed points of every structure from its mean training mask.

        Args:
            mean_masks: (C, S, S) mean of the training masks at the model's input size.

        Raises:
            ValueError: the shape does not fit, or a structure is empty in every training mask.
        """
        c, n = self.fixed_labels.shape
        if mean_masks.shape[0] != c:
            raise ValueError(f"mean masks of {mean_masks.shape[0]} structures for a model of {c}")
        for ch in range(c):
            found = fixed_points_in_region(region_of_mean_mask(mean_masks[ch]), n)
            k = found.n_objects
            self.fixed_points[ch].zero_()
            self.fixed_labels[ch].fill_(-1)
            self.fixed_points[ch, :k] = torch.from_numpy(found.points[:, 0])
            self.fixed_labels[ch, :k] = 1

    # ---------------------------------------------------------------------------- prompts
    def prompts_for(self, channel: int, reference: Optional[np.ndarray], rng: Optional[np.random.Generator]) -> Prompts:
        """The configured prompt of one structure: one object.

        Args:
            channel: the structure.
            reference: its (S, S) reference mask (needed for box prompts).
            rng: jitter generator (training), None for the exact box.

        Returns:
            One object's prompt; no object for an empty reference under box prompts.
        """
        if self.settings.prompt == "box":
            if reference is None:
                raise ValueError("this prompted_sam model was fine-tuned with box prompts: predicting needs a "
                                 "reference (or draft) mask to draw the box from")
            return box_around_mask(reference, self.settings.box_jitter if rng is not None else 0.0, rng)
        labels = self.fixed_labels[channel]
        if not (labels == 1).any():
            raise ValueError("the fixed points of this prompted_sam model were never derived (fit_fixed_points); "
                             "train it first")
        keep = labels == 1
        points = self.fixed_points[channel][keep].cpu().numpy()[None]
        return Prompts(None, points, np.ones((1, len(points[0])), dtype=np.int64), uses_ground_truth=False)

    # ---------------------------------------------------------------------------- forward
    def embed(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """SAM image embeddings of (B, 3, S, S) images in 0..1.

        Returns:
            ``(embedding (B, 256, e, e), high-resolution maps)``; the maps (SAM2 only) have
            been through the decoder's own projections, which train with the decoder.
        """
        if self.minmax:  # LiteMedSAM: each image to its own 0..1 range
            lo = x.amin(dim=(1, 2, 3), keepdim=True)
            hi = x.amax(dim=(1, 2, 3), keepdim=True)
            x = (x - lo) / torch.clamp(hi - lo, min=1e-8)
        x = (x - self.mean) / self.std
        with nullcontext() if (self.encoder_trains and torch.is_grad_enabled()) else torch.no_grad():
            *high_res, embedding = self.backbone(x)
        if high_res:
            high_res = [self.mask_decoder.conv_s0(high_res[0]), self.mask_decoder.conv_s1(high_res[1])]
        return embedding, high_res

    def decode(self, embedding: torch.Tensor, high_res: list[torch.Tensor], prompts: Prompts,
               mask_input: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Low-resolution logits (1, 1, r, r) of one object on one image.

        Args:
            embedding: (1, 256, e, e) from :meth:`embed`.
            high_res: that image's high-resolution maps from :meth:`embed` (SAM2), else empty.
            prompts: one object (box and/or points, in input pixels); none gives
                :data:`EMPTY_LOGIT` everywhere (still through the decoder, so every trained
                tensor takes part in each step, as DistributedDataParallel requires).
            mask_input: (1, 1, r, r) logits of a previous round.
        """
        dev = embedding.device
        pe = self.prompt_encoder
        empty = prompts.n_objects == 0
        if empty:  # SAM's padding point (label -1): a prompt that says nothing
            prompts = Prompts(None, np.zeros((1, 1, 2), np.float32), -np.ones((1, 1), np.int64), False)
        box = torch.from_numpy(prompts.boxes).to(dev) if prompts.boxes is not None else None
        points = None
        if prompts.points is not None:
            points = (torch.from_numpy(prompts.points).to(dev), torch.from_numpy(prompts.labels).to(dev))
        sparse, dense = pe(points=points, boxes=box, masks=mask_input)
        low = self.mask_decoder(image_embeddings=embedding, image_pe=pe.get_dense_pe(),
                                sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                multimask_output=False, repeat_image=False,
                                **({"high_res_features": high_res} if high_res else {}))[0]
        return low * 0.0 + EMPTY_LOGIT if empty else low

    def _object_logits(self, embedding: torch.Tensor, high_res: list[torch.Tensor], prompts: Prompts,
                       reference: Optional[np.ndarray], rounds: int, size: int) -> torch.Tensor:
        """(1, 1, S, S) logits of one object after ``rounds`` correction clicks (run without
        gradients; the last decoding keeps them)."""
        low = None
        for _ in range(rounds):
            with torch.no_grad():
                low = self.decode(embedding.detach(), [h.detach() for h in high_res], prompts, low)
                pred = F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)[0, 0] > 0
            click = next_correction_click(pred.cpu().numpy(), reference)
            if click is None:
                break
            prompts = prompts.with_point(click.x, click.y, click.label)
        low = self.decode(embedding, high_res, prompts, low)
        return F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor, target: Optional[torch.Tensor] = None) -> list[torch.Tensor]:
        """Args:
            x: (B, 3, S, S) images in 0..1.
            target: (B, C, S, S) reference masks; in training mode prompts are drawn from it
                (jittered boxes, correction clicks), in eval mode exact boxes.

        Returns:
            ``[logits (B, C, S, S)]`` (one head).
        """
        rng = None
        if self.training:
            # From torch's generator, so the engine's seeding and --resume cover the prompts too.
            rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, ()).item()))
        refs = None if target is None else target.detach().cpu().numpy() > 0.5
        embedding, high_res = self.embed(x)
        size = x.shape[-1]
        rows = []
        for b in range(len(x)):
            row = []
            for c in range(self.out_channels):
                ref = None if refs is None else refs[b, c]
                prompts = self.prompts_for(c, ref, rng)
                rounds = 0
                if rng is not None and ref is not None and self.settings.clicks:
                    rounds = int(rng.integers(0, self.settings.clicks + 1))
                maps = [h[b : b + 1] for h in high_res]
                row.append(self._object_logits(embedding[b : b + 1], maps, prompts, ref, rounds, size))
            rows.append(torch.cat(row, dim=1))
        return [torch.cat(rows, dim=0)]

    def predict_logits(self, x: torch.Tensor, reference: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Final logits (B, C, S, S) with the configured prompts, no clicks.

        Args:
            x: (B, 3, S, S) images in 0..1.
            reference: (B, C, S, S) masks the boxes are drawn from (box prompts only).
        """
        return self(x, reference)[-1]


def mean_training_masks(items: Iterable[torch.Tensor]) -> np.ndarray:
    """The pixel-wise mean of training masks, accumulated one at a time.

    Args:
        items: (C, S, S) masks of one shape (the dataset's un-augmented ``mask`` tensors).

    Returns:
        (C, S, S) float32 mean.
    """
    total, n = None, 0
    for mask in items:
        m = mask.float().numpy()
        total = m if total is None else total + m
        n += 1
    if total is None:
        raise ValueError("no training masks to average")
    return (total / n).astype(np.float32)


def create_prompted_sam(encoder: str, weights: str, prompted: PromptedConfig, attention_lora: AttentionLoraConfig,
                        out_channels: int, image_size: int) -> PromptedSam:
    """Build a prompted model from its SAM-family checkpoint.

    Args:
        encoder: ``mobilesam_tinyvit``, ``litemedsam_tinyvit`` or a SAM2 Hiera name.
        weights: ``default`` (the published file, sha256-checked where the digest is
            published) or a path.
        prompted: the ``model.prompted`` section.
        attention_lora: the ``model.attention_lora`` section (encoder LoRA).
        out_channels: structures predicted.
        image_size: the square input (``data.image_size``), a multiple of the encoder's stride.

    Returns:
        The model, frozen but for the trained parts of the configured setting.

    Raises:
        CheckpointNotFoundError: the checkpoint is not on disk.
        CheckpointError: a wrong digest or a file that does not fit.
    """
    # One read of the file (digest verified): the trunk and the SAM head both come from it.
    spec = get_encoder_spec(encoder)
    path, state = read_encoder_checkpoint(spec, weights)
    trunk = create_encoder(encoder, "random")
    load_encoder_state(trunk, spec, state, path.name)
    if spec.sam_head == "sam1":
        head = SamHead(trunk.out_channels[-1], image_size, image_size // trunk.stride)
        head.load_sam1(state.get("model", state), path.name)
        parts = Sam1Backbone(trunk, head.neck), head.prompt_encoder, head.mask_decoder
        minmax = SAM_VARIANTS[encoder].minmax
    else:
        parts, minmax = _sam2_parts(spec.kwargs["config"], trunk, state, path.name, image_size), False
    return PromptedSam(*parts, (trunk.mean, trunk.std, minmax), prompted, attention_lora, out_channels)


def _sam2_parts(config: str, encoder: Encoder, state: dict, source: str, size: int
                ) -> tuple[Sam2Backbone, nn.Module, nn.Module]:
    """The ``sam2`` package's image model at ``size`` with our (already loaded) Hiera trunk and
    every other tensor of an official-format checkpoint, loaded strictly.

    Raises:
        CheckpointError: the file's non-trunk tensors do not fit the config's model.
    """
    from sam2.build_sam import build_sam2

    sam = build_sam2(config, None, device="cpu", mode="eval", hydra_overrides_extra=[f"++model.image_size={size}"])
    sam.image_encoder.trunk = encoder.trunk
    trunk = "image_encoder.trunk."
    rest = {k: v for k, v in state.get("model", {}).items() if not k.startswith(trunk)}
    expected = {k: v for k, v in sam.state_dict().items() if not k.startswith(trunk)}
    load_state_strictly(sam, rest, source, config, expected)
    backbone = Sam2Backbone(sam.image_encoder, sam.no_mem_embed, encoder.attention_lora_targets)
    return backbone, sam.sam_prompt_encoder, sam.sam_mask_decoder
