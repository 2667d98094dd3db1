"""SAM's neck, prompt encoder and mask decoder for the SAM1-layout TinyViT models (LiteMedSAM,
MobileSAM), shared by the zero-shot predictors (:mod:`s2unet.baselines.sam_predictors`) and the
fine-tuned prompted model (:mod:`s2unet.models.prompted_sam`).

The modules are the ``sam2`` package's own, configured the SAM1 way (no high-resolution
features, no object-score token, IoU head without sigmoid). Their tensors load strictly from
the SAM1 keys; the only renaming is the transformer MLP (SAM1 ``mlp.lin1/lin2`` = sam2
``mlp.layers.0/1``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..weights import load_state_strictly
from .encoders import get_encoder_spec


@dataclass(frozen=True)
class SamVariant:
    """One SAM1-layout model family.

    Attributes:
        name: registry name.
        encoder: the TinyViT encoder registered in :mod:`s2unet.models.encoders`, whose entry
            gives the checkpoint and the input size.
        minmax: rescale each image to its own min..max before normalising (LiteMedSAM's
            preprocessing; SAM's is fixed pixel statistics only).
    """

    name: str
    encoder: str
    minmax: bool

    @property
    def checkpoint(self) -> str:
        """Manifest key of the encoder's published checkpoint (it holds the SAM head too)."""
        return get_encoder_spec(self.encoder).checkpoint.key

    @property
    def image_size(self) -> int:
        """Square input side: the encoder's design size."""
        return get_encoder_spec(self.encoder).default_image_size


LITEMEDSAM = SamVariant("litemedsam", "litemedsam_tinyvit", minmax=True)
MOBILESAM = SamVariant("mobilesam", "mobilesam_tinyvit", minmax=False)
# By encoder name, for models configured through model.encoder.
SAM_VARIANTS = {v.encoder: v for v in (LITEMEDSAM, MOBILESAM)}


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
        load_state_strictly(self, self.sam1_keys_to_ours(state), source, "the SAM neck / prompt encoder / mask decoder")
