"""Low-rank adapters for a frozen encoder: stage adapters (forward pre-hooks) and attention LoRA (peft).

A stage adapter adds ``scale * up(dropout(act(down(x))))`` to the input of the block it sits
in front of. ``up`` starts at zero, so an untrained adapter leaves the pretrained features
exactly unchanged. Adapters are attached with forward pre-hooks rather than by wrapping the
blocks, so the trunk keeps the official parameter names and checkpoints stay interchangeable.
"""
from __future__ import annotations

import torch
from torch import nn

from ..config import AdapterConfig, AttentionLoraConfig
from .encoders.base import AdapterSite, Encoder


class LowRankAdapter(nn.Module):
    """Residual low-rank bottleneck on the channel axis.

    Args:
        dim: channels of the tensor it adapts.
        rank: bottleneck width.
        alpha: the update is scaled by ``alpha / rank`` (the LoRA convention).
        dropout: dropout inside the bottleneck.
        channels_last: True for (..., C) tensors, False for (B, C, H, W).
    """

    def __init__(self, dim: int, rank: int, alpha: float, dropout: float, channels_last: bool) -> None:
        super().__init__()
        self.down = nn.Linear(dim, rank, bias=False)
        self.act = nn.GELU()
        self.drop = nn.Dropout(dropout)
        self.up = nn.Linear(rank, dim, bias=False)
        self.scale = alpha / rank
        self.channels_last = channels_last
        nn.init.kaiming_uniform_(self.down.weight, a=5**0.5)
        nn.init.zeros_(self.up.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x if self.channels_last else x.movedim(1, -1)
        h = self.up(self.drop(self.act(self.down(h)))) * self.scale
        return x + (h if self.channels_last else h.movedim(-1, 1))


def _pre_hook(adapter: LowRankAdapter):
    def hook(_module: nn.Module, args: tuple) -> tuple:
        return (adapter(args[0]),) + args[1:]

    return hook


def attach_stage_adapters(encoder: Encoder, cfg: AdapterConfig) -> nn.ModuleList:
    """Create adapters at the encoder's sites and hook them in front of those blocks.

    Args:
        encoder: the frozen encoder.
        cfg: placement ("stage": ahead of each of the four stages, "block": ahead of every
            block, "none") and the low-rank hyper-parameters.

    Returns:
        The adapters (empty for "none"); the caller owns them as a submodule so they train
        and are saved.
    """
    adapters = nn.ModuleList()
    if cfg.placement == "none":
        return adapters
    sites: list[AdapterSite] = encoder.adapter_sites(cfg.placement)
    for site in sites:
        adapter = LowRankAdapter(site.dim, cfg.rank, cfg.alpha, cfg.dropout, site.channels_last)
        site.module.register_forward_pre_hook(_pre_hook(adapter))
        adapters.append(adapter)
    return adapters


def attach_attention_lora(encoder: nn.Module, cfg: AttentionLoraConfig, targets: str | list[str] | None = None) -> None:
    """Inject peft LoRA layers into the attention projections of a module (in place).

    Args:
        encoder: an :class:`Encoder`, or any module when ``targets`` are given.
        cfg: rank, alpha, dropout (nothing happens unless ``enabled``).
        targets: peft ``target_modules``; the encoder's ``attention_lora_targets`` when None.
    """
    if not cfg.enabled:
        return
    # peft pulls in transformers (seconds of import time): only when attention LoRA is asked for.
    from peft import LoraConfig, inject_adapter_in_model

    lora = LoraConfig(
        r=cfg.rank,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=targets if targets is not None else encoder.attention_lora_targets,
        bias="none",
    )
    inject_adapter_in_model(lora, encoder)


def merge_attention_lora(encoder: nn.Module) -> int:
    """Fold every peft LoRA update into its base weight and drop the LoRA branch.

    Returns:
        How many layers were merged.
    """
    from peft.tuners.lora import LoraLayer

    merged = 0
    for parent in list(encoder.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, LoraLayer):
                child.merge()
                setattr(parent, name, child.get_base_layer())
                merged += 1
    return merged
