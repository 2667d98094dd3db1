"""CNN baselines trained by the same engine as s2unet: a monai U-Net and a DeepLabV3+ (ResNet-34).

Both take (B, 3, H, W) images in 0..1 like every :class:`SegmentationModel`, normalise them
with the ImageNet statistics inside, and return ``[logits]`` (a single, final output: no deep
supervision; the loss weights the last output only).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..weights import CheckpointNotFoundError
from .base import SegmentationModel
from .encoders.base import IMAGENET_MEAN, IMAGENET_STD

UNET_CHANNELS = (16, 32, 64, 128, 256)
DEEPLAB_ENCODER = "resnet34"
# Both networks halve the resolution four times (DeepLabV3+'s output stride is 16), so sides
# must be multiples of 16; other sizes are padded up and the logits cropped back.
SIZE_MULTIPLE = 16


class CNNSegmentationModel(SegmentationModel):
    """A plain CNN with ImageNet input normalisation and size padding.

    Args:
        net: a network mapping normalised (B, 3, H, W) to (B, C, H, W) logits, H and W
            multiples of ``SIZE_MULTIPLE``.
        name: the architecture name, for messages.
    """

    def __init__(self, net: nn.Module, name: str) -> None:
        super().__init__()
        self.net = net
        self.name = name
        # Not persistent: checkpoints hold only the network, the statistics are constants.
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Args:
            x: (B, 3, H, W) images in 0..1, any H and W.

        Returns:
            ``[logits]`` with logits (B, C, H, W).
        """
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"{self.name} expects (B, 3, H, W) input, got {tuple(x.shape)}")
        h, w = x.shape[-2:]
        x = (x - self.mean) / self.std
        pad_h, pad_w = (-h) % SIZE_MULTIPLE, (-w) % SIZE_MULTIPLE
        if pad_h or pad_w:
            # Zero after normalisation = the mean colour, the least surprising filler.
            x = F.pad(x, (0, pad_w, 0, pad_h))
        return [self.net(x)[..., :h, :w]]


def _imagenet_weights_on_disk(encoder_name: str) -> None:
    """Make sure smp's ImageNet encoder weights are in the local Hugging Face cache.

    smp downloads them from the Hugging Face hub on first use; these machines are offline, so
    a missing file must be a clear error rather than a network timeout.

    Raises:
        CheckpointNotFoundError: the weights are not cached.
    """
    from huggingface_hub import constants, try_to_load_from_cache
    from segmentation_models_pytorch.encoders import encoders

    settings = encoders[encoder_name]["pretrained_settings"]["imagenet"]
    missing = [
        name
        for name in ("config.json", "model.safetensors")
        if not isinstance(try_to_load_from_cache(settings["repo_id"], name, revision=settings["revision"]), str)
    ]
    if missing:
        raise CheckpointNotFoundError(
            f"model.cnn_pretrained: the ImageNet weights of the {encoder_name} encoder "
            f"({settings['repo_id']}, revision {settings['revision']}: {', '.join(missing)}) are not "
            f"available offline in the Hugging Face cache {constants.HF_HUB_CACHE}. Download them on a "
            "machine with internet access (huggingface_hub.snapshot_download with that repo and "
            "revision) and copy the cache folder here (or point HF_HUB_CACHE at it), or train from "
            "scratch with model.cnn_pretrained=false."
        )


def create_unet(out_channels: int, pretrained: bool = False) -> SegmentationModel:
    """Build the monai U-Net baseline (``model.arch: unet``), every parameter trainable.

    Raises:
        ValueError: ``cnn_pretrained``: the U-Net has no pretrained encoder.
    """
    if pretrained:
        raise ValueError("model.cnn_pretrained: the monai U-Net has no pretrained weights; set it to false")
    from monai.networks.nets import UNet

    net = UNet(
        spatial_dims=2,
        in_channels=3,
        out_channels=out_channels,
        channels=UNET_CHANNELS,
        strides=(2,) * (len(UNET_CHANNELS) - 1),
        num_res_units=2,
    )
    return CNNSegmentationModel(net, "unet")


def create_deeplabv3plus(out_channels: int, pretrained: bool = False) -> SegmentationModel:
    """Build the DeepLabV3+ baseline (``model.arch: deeplabv3plus``), every parameter trainable.

    Args:
        out_channels: prediction channels.
        pretrained: ImageNet encoder weights (``model.cnn_pretrained``).

    Raises:
        CheckpointNotFoundError: ImageNet weights requested but not on disk.
    """
    import segmentation_models_pytorch as smp

    weights = None
    if pretrained:
        _imagenet_weights_on_disk(DEEPLAB_ENCODER)
        weights = "imagenet"
    net = smp.DeepLabV3Plus(encoder_name=DEEPLAB_ENCODER, encoder_weights=weights, in_channels=3, classes=out_channels)
    return CNNSegmentationModel(net, "deeplabv3plus")
