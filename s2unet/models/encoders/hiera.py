"""SAM2 / SAM2.1 / MedSAM2 Hiera image-encoder trunks as frozen four-scale encoders.

The trunk is the ``sam2`` package's own ``Hiera`` built from the package's own YAML configs, so
the architecture and the state-dict keys are exactly those of the official checkpoints (with
the ``image_encoder.`` prefix dropped). SAM2's FPN neck is not used: the U-Net decoder takes
the four trunk stages directly.
"""
from __future__ import annotations

import inspect
import math
from importlib import resources
from typing import Any

import torch
import torch.nn.functional as F
import yaml
from sam2.modeling.backbones.hieradet import Hiera, MultiScaleBlock, do_pool
from sam2.modeling.backbones.utils import PatchEmbed
from torch import nn

from ...weights import CheckpointError, CheckpointInfo
from .base import IMAGENET_MEAN, IMAGENET_STD, AdapterSite, Encoder, EncoderSpec, Placement, Stats, register_encoder
from .windows import grid_to_windows, windows_to_grid

_OFFICIAL_PREFIX = "image_encoder.trunk."
_OWN_PREFIX = "trunk."


def hiera_trunk_kwargs(config: str) -> dict[str, Any]:
    """Read the Hiera hyper-parameters from one of the installed ``sam2`` package's configs.

    Args:
        config: the config name as ``sam2.build_sam.build_sam2`` takes it,
            e.g. ``"configs/sam2.1/sam2.1_hiera_t.yaml"``.

    Returns:
        The ``model.image_encoder.trunk`` section without ``_target_``, ready for ``Hiera(**kwargs)``.
    """
    text = resources.files("sam2").joinpath(config).read_text(encoding="utf-8")
    trunk = dict(yaml.safe_load(text)["model"]["image_encoder"]["trunk"])
    target = trunk.pop("_target_")
    if target != f"{Hiera.__module__}.{Hiera.__name__}":
        raise ValueError(f"sam2 config {config} builds {target}, not the Hiera trunk this encoder wraps")
    return trunk


class UnpaddedWindowBlock(MultiScaleBlock):
    """A Hiera block that computes the same function without projecting padding tokens.

    When a feature map is not a whole number of attention windows (at 256 px Hiera's 16 x 16
    third stage meets windows of 14, padded to 28 x 28), the official block pads the normed map
    with zeros and runs the qkv and output projections on every padded token: three times the
    real tokens there. A zero token's qkv is the projection's bias, so this block projects the
    real tokens only, writes them and the projection of a zero token straight into the window
    layout (``windows.grid_to_windows``), and applies the output projection after the padding is
    cropped. Attention itself still sees the padded windows, so the result equals the official
    block's (to float rounding); weights, names and hooks are untouched. Blocks whose map needs
    no padding run the official code.
    """

    @classmethod
    def from_block(cls, block: MultiScaleBlock) -> "UnpaddedWindowBlock":
        """The same block (its very tensors, shared), as this class; ``block`` is left as it is.

        Args:
            block: an official block as ``Hiera`` builds it (default norm and activation).

        Returns:
            A new module whose parameters are ``block``'s.
        """
        # Built on the meta device: no memory and no random draws (a model.weights: random
        # encoder stays the same draw), then given the official block's tensors.
        with torch.device("meta"):
            new = cls(
                dim=block.dim,
                dim_out=block.dim_out,
                num_heads=block.attn.num_heads,
                mlp_ratio=block.mlp.layers[0].out_features / block.dim_out,
                drop_path=getattr(block.drop_path, "drop_prob", 0.0),
                q_stride=block.q_stride,
                window_size=block.window_size,
            )
        new.load_state_dict(block.state_dict(), strict=True, assign=True)
        return new.train(block.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, H, W, C = x.shape
        window = self.window_size
        if not window or (H % window == 0 and W % window == 0):
            return super().forward(x)
        shortcut = x
        x = self.norm1(x)
        if self.dim != self.dim_out:
            shortcut = do_pool(self.proj(x), self.pool)
        attn = self.attn
        windows = grid_to_windows(attn.qkv(x), attn.qkv(x.new_zeros(C)), window)
        n, h, w, _ = windows.shape
        q, k, v = windows.reshape(n, h * w, 3, attn.num_heads, -1).unbind(2)
        if attn.q_pool is not None:
            q = do_pool(q.reshape(n, h, w, -1), attn.q_pool)
            h, w = q.shape[1:3]
            q = q.reshape(n, h * w, attn.num_heads, -1)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        out = windows_to_grid(out.transpose(1, 2).reshape(n, h, w, -1), *shortcut.shape[1:3])
        x = shortcut + self.drop_path(attn.proj(out))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class HieraEncoder(Encoder):
    """A SAM2 Hiera trunk returning its four stage outputs (strides 4, 8, 16, 32).

    Args:
        config: the ``sam2`` config the trunk comes from (see ``hiera_trunk_kwargs``).
        mean: input normalisation (SAM2's image transforms use the ImageNet statistics, the
            default).
        std: the matching standard deviations.
    """

    # Only the attention projections: each block also has an MLP (mlp.layers.N) and, where a
    # stage starts, a skip projection (blocks.N.proj) that LoRA must leave alone.
    attention_lora_targets = r"^(.*\.)?trunk\.blocks\.\d+\.attn\.(qkv|proj)$"

    def __init__(self, config: str, mean: Stats = IMAGENET_MEAN, std: Stats = IMAGENET_STD) -> None:
        super().__init__(mean, std)
        self.config = config
        self.trunk = Hiera(**hiera_trunk_kwargs(config))
        self.trunk.blocks = nn.ModuleList(UnpaddedWindowBlock.from_block(block) for block in self.trunk.blocks)
        self.out_channels = tuple(self.trunk.blocks[end].dim_out for end in self.trunk.stage_ends)
        self.strides, self.stride = self.strides_for(config)

    @classmethod
    def strides_for(cls, config: str) -> tuple[tuple[int, int, int, int], int]:  # type: ignore[override]
        """``(strides, stride)`` of the trunk a ``sam2`` config describes (see ``Encoder.strides_for``).

        Read from the config and the defaults of ``Hiera`` and its ``PatchEmbed`` (which the
        trunk builds with its default stride), so nothing is allocated.
        """
        bound = inspect.signature(Hiera).bind(**hiera_trunk_kwargs(config))
        bound.apply_defaults()
        trunk = bound.arguments
        patch_stride = inspect.signature(PatchEmbed).parameters["stride"].default[0]
        # q_pool stages each pool by q_stride; later stages keep the last stride.
        pool, pooled = trunk["q_stride"][0], trunk["q_pool"]
        strides = tuple(patch_stride * pool ** min(i, pooled) for i in range(len(trunk["stages"])))
        # The windowed position embedding is tiled at the patch grid, so the grid must be a
        # whole number of windows as well as divisible down to the deepest stage.
        window_stride = patch_stride * trunk["window_spec"][0]
        return strides, math.lcm(strides[-1], window_stride)  # type: ignore[return-value]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Args:
            x: (B, 3, H, W) normalised RGB, H and W multiples of ``stride``.

        Returns:
            Four (B, C_i, H / s_i, W / s_i) maps, C_i = embed_dim * (1, 2, 4, 8).
        """
        self.check_input(x)
        return list(self.trunk(x))

    def adapter_sites(self, placement: Placement) -> list[AdapterSite]:
        """The first block of each stage ("stage") or every block ("block").

        Args:
            placement: "stage" or "block".

        Returns:
            Sites whose input is (B, H, W, C) with C the block's input dim.
        """
        blocks = self.trunk.blocks
        if placement == "stage":
            indices = [0, *(end + 1 for end in self.trunk.stage_ends[:-1])]
        elif placement == "block":
            indices = list(range(len(blocks)))
        else:
            raise ValueError(f"unknown adapter placement {placement!r}; use 'stage' or 'block'")
        return [AdapterSite(module=blocks[i], dim=blocks[i].dim, channels_last=True) for i in indices]

    def select_weights(self, checkpoint: dict, source: str) -> dict[str, torch.Tensor]:
        """Take the trunk out of an official SAM2 checkpoint, or accept a trunk state dict.

        Args:
            checkpoint: an official file's content (``{"model": full SAM2 state dict, ...}``) or
                a state dict with ``trunk.*`` keys (this encoder's own ``state_dict()``).
            source: the file name, for error messages.

        Returns:
            The ``trunk.*`` tensors, named as in ``self.state_dict()``.

        Raises:
            CheckpointError: the file holds neither layout.
        """
        model = checkpoint.get("model")
        if isinstance(model, dict):
            state = {
                _OWN_PREFIX + k.removeprefix(_OFFICIAL_PREFIX): v
                for k, v in model.items()
                if k.startswith(_OFFICIAL_PREFIX)
            }
            if not state:
                raise CheckpointError(
                    f"{source}: its 'model' state dict has no '{_OFFICIAL_PREFIX}*' keys, so it is not a "
                    "SAM2 checkpoint (first keys: " + ", ".join(list(model)[:5]) + ")"
                )
            return state
        state = {k: v for k, v in checkpoint.items() if k.startswith(_OWN_PREFIX)}
        if not state:
            raise CheckpointError(
                f"{source} is neither a SAM2 checkpoint (a 'model' dict with '{_OFFICIAL_PREFIX}*' keys) nor "
                f"a Hiera trunk state dict ('{_OWN_PREFIX}*' keys); its top-level keys are: "
                + ", ".join(map(str, list(checkpoint)[:5]))
            )
        return state


# The official SAM2 (July 2024) and SAM2.1 (September 2024) releases: family -> (download
# folder, label); size -> (the sam2 config's suffix, the label).
_FAMILIES = {
    "sam2": ("https://dl.fbaipublicfiles.com/segment_anything_2/072824/", "SAM2"),
    "sam2.1": ("https://dl.fbaipublicfiles.com/segment_anything_2/092824/", "SAM2.1"),
}
_SIZES = {"tiny": ("t", "T"), "small": ("s", "S"), "base_plus": ("b+", "B+"), "large": ("l", "L")}
_SHA256 = {"sam2.1_hiera_tiny": "7402e0d864fa82708a20fbd15bc84245c2f26dff0eb43a4b5b93452deb34be69"}
# Every family x size as ``(name, sam2 config, checkpoint URL, label)``; the name is also the
# checkpoint's manifest key and the prompted SAM2 predictor's name.
OFFICIAL_SAM2 = tuple(
    (f"{family}_hiera_{size}", f"configs/{family}/{family}_hiera_{short}.yaml",
     f"{base_url}{family}_hiera_{size}.pt", f"{label} Hiera-{size_label}")
    for family, (base_url, label) in _FAMILIES.items()
    for size, (short, size_label) in _SIZES.items()
)


def _register_official() -> None:
    """Register the eight official trunks with their published checkpoints."""
    for name, config, url, label in OFFICIAL_SAM2:
        checkpoint = CheckpointInfo(
            key=name,
            filename=f"{name}.pt",
            sha256=_SHA256.get(name),
            url=url,
            description=f"official {label} model; 'model' holds the full SAM2 state dict",
            licence="Apache-2.0",
        )
        register_encoder(
            EncoderSpec(
                name=name,
                build=HieraEncoder,
                checkpoint=checkpoint,
                description=f"{label} image-encoder trunk",
                kwargs={"config": config},
                sam_head="sam2",
            )
        )


_register_official()
register_encoder(
    EncoderSpec(
        name="medsam2",
        build=HieraEncoder,
        checkpoint=CheckpointInfo(
            key="medsam2",
            filename="MedSAM2_latest.pt",
            sha256=None,
            url="https://huggingface.co/wanglab/MedSAM2/resolve/main/MedSAM2_latest.pt",
            description="MedSAM2: SAM2.1 Hiera-T fine-tuned on 3D medical images and videos (SAM2 format)",
            licence="Apache-2.0",
        ),
        description="MedSAM2 image-encoder trunk (SAM2.1 Hiera-T fine-tuned on medical images)",
        kwargs={"config": "configs/sam2.1/sam2.1_hiera_t.yaml"},
        sam_head="sam2",
    )
)
