"""The loss registry: ``loss: {name: <a key of LOSSES>, <that loss's own keys>}``.

Adding a loss is one file (a parameters dataclass with :func:`~s2unet.config.ranged` numbers
and a ``SPEC``; see :mod:`.dice_focal`) plus one line in :data:`LOSSES`.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import torch

from ..config import LossConfig, build_params, check_registered
from . import dice_ce, dice_focal, structure
from .base import LossSpec

LOSSES: dict[str, LossSpec] = {
    "structure": structure.SPEC,
    "dice_focal": dice_focal.SPEC,
    "dice_ce": dice_ce.SPEC,
}


def loss_names() -> list[str]:
    """The names ``loss.name`` accepts."""
    return list(LOSSES)


def loss_params(cfg: LossConfig) -> Any:
    """The named loss's own keys, built and checked like every config key.

    Args:
        cfg: the ``loss:`` section.

    Returns:
        An instance of the loss's parameters dataclass.

    Raises:
        ConfigError: an unknown loss name or key (with the closest valid one), a wrong type or
            a value outside its range, naming ``loss.<key>``.
    """
    check_registered(cfg.name, LOSSES, "loss.name", "loss")
    spec = LOSSES[cfg.name]
    params = build_params(spec.params, cfg.params, "loss.", f"loss {cfg.name}")
    if spec.check is not None:
        spec.check(params)
    return params


def build_loss(cfg: LossConfig, multiclass: bool) -> Callable[[Sequence[torch.Tensor], torch.Tensor], torch.Tensor]:
    """The loss over all deep-supervision outputs, weighted per head (deepest first).

    Args:
        cfg: the ``loss:`` section: name, per-head weights and the loss's own keys.
        multiclass: softmax targets given as class indices.

    Returns:
        ``loss(outputs, target) -> scalar``.

    Raises:
        ConfigError: see :func:`loss_params`.
    """
    params = loss_params(cfg)  # checks the name first
    heads = LOSSES[cfg.name].build(params, multiclass)
    head_weights = list(cfg.deep_supervision_weights)

    def total(outputs: Sequence[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        # Models with fewer heads (CNN baselines have one) take the weights of the last heads.
        used = head_weights[-len(outputs):]
        losses = heads(outputs, target)
        return sum(w * loss for w, loss in zip(used, losses) if w) / sum(used)

    return total
