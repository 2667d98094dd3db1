"""The ``text`` section: text-prompted models, their structures' phrasings and the refusal set.

The phrase bank built from it (embeddings, cut-off) lives in :mod:`s2unet.text`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Optional

from .architectures import ARCH_TRAITS, arch_traits
from .ranges import ConfigError, ranged

if TYPE_CHECKING:
    from .schema import Config


@dataclass
class TextStructureConfig:
    """One structure a text-prompted model segments, and the phrases that name it.

    ``label`` is one of the model's label channels (``data.label_names``, or the last part of
    a ``data.labels`` folder). ``phrases`` are trained on; ``heldout`` phrases are never shown
    in training and measure how the model takes paraphrases it has not seen.
    """

    label: str = ""
    phrases: list[str] = field(default_factory=list)
    heldout: list[str] = field(default_factory=list)


# Phrases known to name nothing a chest or CT model segments; they calibrate the refusal
# cut-off (see s2unet.text.bank). Keep evaluation phrases out of this list.
DEFAULT_CALIBRATION_UNRELATED = [
    "liver", "spleen", "stomach", "spine", "pelvis", "ribs", "trachea", "aorta", "breast",
    "the sky", "a red car", "hello world", "a cup of coffee", "mountain landscape",
]


@dataclass
class TextConfig:
    """Text-prompted segmentation: one model for every structure, asked for by a phrase.

    With ``enabled`` the decoder is conditioned on a frozen pretrained phrase embedding
    (``model``) injected into every decoder block (``injection``: FiLM or cross-attention)
    and predicts one mask per phrase. ``structures`` lists the phrasings per label channel;
    labels it leaves out are named by their label with ``_`` read as a space.
    ``phrases_per_image`` structures are drawn per training image (0 = all of them).
    ``refuse_below`` is the cosine similarity of a phrase's side-free words to the nearest
    structure of its side under which the phrase is refused; null chooses it from
    ``calibration_unrelated`` (s2unet.text.bank).

    ``model`` is a key of the text-model registry (``s2unet.text.TEXT_MODELS``), the one list of
    text models. That registry sits above the config layer (its entries load packages), so the
    name is checked where the registry is in reach, by ``check_model_config``: training's
    pre-flight and ``train.py --check-only``, before data is read.
    """

    enabled: bool = False
    model: str = "wordllama_l2_supercat"
    injection: Literal["film", "xattn"] = "film"
    hidden: int = ranged("[1, inf)", 256)  # width of the projected phrase embedding
    tokens: int = ranged("[1, inf)", 4)  # xattn: key/value tokens made from the phrase embedding
    structures: list[TextStructureConfig] = field(default_factory=list)
    phrases_per_image: int = ranged("[0, inf)", 0)
    calibration_unrelated: list[str] = field(default_factory=lambda: list(DEFAULT_CALIBRATION_UNRELATED))
    refuse_below: Optional[float] = ranged("[-1, 1]", None)  # a cosine similarity


def phrase_key(phrase: str) -> str:
    """How phrases are matched: case and runs of white space do not matter."""
    return " ".join(str(phrase).lower().split())


_SIDE_WORD = re.compile(r"(?<![a-z])(left|right)(?![a-z])")


def names_a_side(phrase: str) -> bool:
    """Whether a phrase or label names the left or the right (a horizontal flip swaps it)."""
    return _SIDE_WORD.search(phrase_key(phrase)) is not None


def phrase_side(phrase: str) -> str:
    """The side a phrase names: ``left``, ``right``, or ``""`` (neither, or both)."""
    sides = set(_SIDE_WORD.findall(phrase_key(phrase)))
    return sides.pop() if len(sides) == 1 else ""


def side_free(phrase: str) -> str:
    """A phrase without its side words ("patient's left lung" -> "patient's lung"); a phrase of
    side words only stays as it is, so it still has an embedding."""
    return " ".join(_SIDE_WORD.sub(" ", phrase_key(phrase)).split()) or phrase_key(phrase)


def text_structures(cfg: Config) -> list[TextStructureConfig]:
    """Every label channel of a text-prompted model with its phrasings, in channel order.

    Args:
        cfg: a binary / multilabel config.

    Returns:
        One entry per channel: the one in ``text.structures`` for that label, else the label
        itself as the only phrase (``left_clavicle`` -> ``left clavicle``).
    """
    d = cfg.data
    labels = list(d.label_names) if d.label_names else [Path(p).name for p in d.labels]
    given = {s.label: s for s in cfg.text.structures}
    return [given.get(name) or TextStructureConfig(name, [name.replace("_", " ")]) for name in labels]


def validate_text(cfg: Config) -> None:
    """Cross-field checks of the ``text`` section of a text-prompted model."""
    t = cfg.text
    if not arch_traits(cfg.model.arch).takes_text:
        texted = [name for name, traits in ARCH_TRAITS.items() if traits.takes_text]
        raise ConfigError(f"text.enabled needs model.arch {' or '.join(texted)}, not {cfg.model.arch!r}")
    if cfg.data.task == "multiclass":
        raise ConfigError("text.enabled needs data.task binary or multilabel (one mask per structure), not multiclass")
    structures = text_structures(cfg)
    labels = [s.label for s in structures]
    if t.phrases_per_image > len(labels):
        raise ConfigError(f"text.phrases_per_image {t.phrases_per_image} is outside 0..{len(labels)} (the label count)")
    for i, s in enumerate(t.structures):
        key = f"text.structures[{i}]"
        if s.label not in labels:
            raise ConfigError(f"{key}.label {s.label!r} is not a label of this model; labels: {labels}")
        if [x.label for x in t.structures].count(s.label) > 1:
            raise ConfigError(f"{key}.label {s.label!r} is listed twice")
        if not s.phrases:
            raise ConfigError(f"{key}.phrases: give at least one training phrase for {s.label!r}")
        sides = sorted({phrase_side(p) or "none" for p in s.phrases})
        if len(sides) > 1:  # the side of a phrase picks the structure (s2unet.text.bank)
            raise ConfigError(f"{key}.phrases of {s.label!r} name different sides ({', '.join(sides)}); "
                              f"a structure is on one side (left, right or none): make each side its own label")
    owner: dict[str, str] = {}
    for s in structures:
        for phrase in [*s.phrases, *s.heldout]:
            key = phrase_key(phrase)
            if not key:
                raise ConfigError(f"text.structures: an empty phrase for {s.label!r}")
            if key in owner:
                raise ConfigError(f"text.structures: phrase {phrase!r} is given twice ({owner[key]!r} and {s.label!r})")
            owner[key] = s.label
    for phrase in t.calibration_unrelated:
        if phrase_key(phrase) in owner:
            raise ConfigError(f"text.calibration_unrelated: {phrase!r} is also a phrase of {owner[phrase_key(phrase)]!r}")
