"""What config validation knows of each architecture (``model.arch``), before models is in reach.

The architectures themselves (builders, feature caching...) are the registry of
:mod:`s2unet.models.archs`, which sits above the config layer. The few facts a config check needs
are this plain table: the built-in architectures' rows are written here, and registering an
architecture in the models registry declares its row (a second, different declaration of a name
is refused), so a config naming a plugin architecture is checked once its module is imported.
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Literal

# Encoders whose checkpoint holds a whole prompted model: SAM1-layout TinyViT files and the
# official SAM2 / SAM2.1 / MedSAM2 files. The encoder registry's ``EncoderSpec.sam_head`` is the
# fact; this is its config-time copy (config cannot import models), tested to agree.
PROMPTED_ENCODERS = ("mobilesam_tinyvit", "litemedsam_tinyvit", "medsam2", "sam2_hiera_*", "sam2.1_hiera_*")


@dataclass(frozen=True)
class ArchTraits:
    """The config-visible capabilities of an architecture.

    Attributes:
        encoders: which ``model.encoder`` it takes: ``none`` (it has no encoder; the CNN
            baselines pad any size), ``any`` registered encoder, or only those carrying a SAM
            head (``sam_head``: the prompted model is the encoder's checkpoint).
        takes_text: it can be text-prompted (``text.enabled``).
        takes_prompts: it is a prompted model, trained and evaluated with prompts drawn from the
            reference (``model.prompted``).
    """

    encoders: Literal["none", "any", "sam_head"] = "none"
    takes_text: bool = False
    takes_prompts: bool = False

    def accepts_encoder(self, name: str) -> bool:
        """Whether ``model.encoder`` may name this encoder (registered or not is models' check)."""
        if self.encoders == "sam_head":
            return any(fnmatch.fnmatchcase(name, pattern) for pattern in PROMPTED_ENCODERS)
        return self.encoders == "any"


ARCH_TRAITS: dict[str, ArchTraits] = {
    "s2unet": ArchTraits(encoders="any", takes_text=True),
    "unet": ArchTraits(),
    "deeplabv3plus": ArchTraits(),
    "prompted_sam": ArchTraits(encoders="sam_head", takes_prompts=True),
}


def declare_arch_traits(name: str, traits: ArchTraits) -> None:
    """Add an architecture's row (the models registry does, on registration).

    Raises:
        KeyError: the name has another row already.
    """
    known = ARCH_TRAITS.setdefault(name, traits)
    if known != traits:
        raise KeyError(f"architecture {name!r} is declared with {known}, not {traits}")


def arch_traits(name: str) -> ArchTraits:
    """The row of ``model.arch``.

    Raises:
        ConfigError: an unknown architecture, naming the key and the known ones.
    """
    from .loading import check_registered  # loading imports validation, which imports this module

    check_registered(name, ARCH_TRAITS, "model.arch", "architecture")
    return ARCH_TRAITS[name]


__all__ = ["ARCH_TRAITS", "PROMPTED_ENCODERS", "ArchTraits", "arch_traits", "declare_arch_traits"]
