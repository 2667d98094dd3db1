"""The loss registry: ``loss: {name: <a key of LOSSES>, <that loss's own keys>}``.

Adding a loss is one file (a parameters dataclass with :func:`~s2unet.config.ranged` numbers
and a ``SPEC``; see :mod:`.dice_focal`) plus one line in :data:`LOSSES`.
"""
from __future__ import annotations

import difflib
from typing import Any, Callable, Sequence

import torch

from ..config import ConfigError, LossConfig, build_checked, check_ranges
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
    spec = LOSSES.get(cfg.name)
    if spec is None:
        close = difflib.get_close_matches(cfg.name, LOSSES, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"loss.name: {cfg.name!r} is not a registered loss{hint}; known: {', '.join(LOSSES)}")
    try:
        params = build_checked(spec.params, cfg.params, prefix="loss.")
    except ConfigError as exc:
        raise ConfigError(f"{exc} (loss {cfg.name})") from None
    check_ranges(params, "loss.")
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
