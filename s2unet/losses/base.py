"""What a registered loss declares: its own config keys and how it is built from them."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import torch

# Per-head losses of a model's deep-supervision outputs (deepest first) against one target.
HeadLosses = Callable[[Sequence[torch.Tensor], torch.Tensor], list[torch.Tensor]]


@dataclass(frozen=True)
class LossSpec:
    """One entry of the loss registry.

    Attributes:
        params: a dataclass of the loss's own ``loss:`` keys, numbers declared with
            :func:`~s2unet.config.ranged` so their ranges are checked like every config key.
        build: ``build(params, multiclass)`` -> the per-head losses. ``multiclass`` targets are
            (B, H, W) class indices under a softmax; otherwise (B, C, H, W) in {0, 1} under one
            sigmoid per channel.
        summary: one line for listings and error messages.
        check: cross-key rules beyond the ranges, raising ``ConfigError`` naming the key.
    """

    params: type
    build: Callable[[Any, bool], HeadLosses]
    summary: str
    check: Optional[Callable[[Any], None]] = None


def monai_spec(loss_cls: type[torch.nn.Module], params: type, summary: str) -> LossSpec:
    """A registry entry for a MONAI loss whose ``params`` fields are its own argument names.

    Args:
        loss_cls: e.g. ``monai.losses.DiceFocalLoss``.
        params: the dataclass of the keys passed through as keyword arguments.
        summary: one line for listings.

    Returns:
        The spec; the activation (sigmoid, or softmax over one-hot class indices) follows the task.
    """

    def build(values: Any, multiclass: bool) -> HeadLosses:
        loss = loss_cls(sigmoid=not multiclass, softmax=multiclass, to_onehot_y=multiclass, **dataclasses.asdict(values))

        def heads(outputs: Sequence[torch.Tensor], target: torch.Tensor) -> list[torch.Tensor]:
            # MONAI takes class indices as a (B, 1, H, W) channel.
            return [loss(o, target.unsqueeze(1) if multiclass else target) for o in outputs]

        return heads

    return LossSpec(params, build, summary)
