"""The phrases a text-prompted model knows, their cached embeddings and the refusal rule.

A :class:`PhraseBank` is built once when training starts (the text model embeds every
configured phrase, and every phrase without its side words) and is stored in the checkpoint, so
inference with a configured phrase needs no text model. Any other phrase is embedded by the same
text model. A phrase is matched on two attributes, its side and what it names:

* side: ``left``, ``right`` or none (:func:`~s2unet.config.phrase_side`); only the structures of
  that side are candidates (a structure's side is the one its training phrases name);
* what: the similarity of the phrase without its side words to a structure's side-free training
  phrases (best one); the words "left"/"right" carry much of an averaged word embedding, so
  "left kidney" is near "left lung" but "kidney" is not near "lung".

The phrase is taken as the nearest candidate. It is refused, with the list of known structures,
when that similarity is below the cut-off, or when its margin (the similarity minus that of the
nearest other structure not of the opposite side: the side word decides between a left and a
right structure, not the words) is below the margin floor; never turned into an arbitrary mask.

Rules (``text.refuse_below: null``), computed from phrase embeddings only:

* positives: every training phrase scored against the *other* training phrases (leave one
  out: how a new phrasing of a known structure lands); negatives: every
  ``text.calibration_unrelated`` phrase scored against all training phrases;
* cut-off: the midpoint of the gap between two neighbouring similarities that maximises
  sensitivity + specificity over these positives and negatives. When they do not separate,
  that best gap is still used and a warning says how many fall on the wrong side;
* margin floor: the lowest margin of a positive (a new phrase may be as close to another
  structure as a training phrasing is, not closer).

Held-out paraphrases and evaluation phrases take no part in them.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np
import torch

from ..config import Config, ConfigError, TextConfig, phrase_key, phrase_side, side_free, text_structures
from ..weights import CheckpointError
from .embedders import TextEmbedder, get_text_model_spec, load_text_model

log = logging.getLogger(__name__)


class UnknownPhraseError(ValueError):
    """A phrase is too far from every structure the model was trained on; the message lists them."""


def choose_cutoff(positive: np.ndarray, negative: np.ndarray) -> tuple[float, dict[str, Any]]:
    """The similarity cut-off separating known-structure phrases from unrelated ones.

    Args:
        positive: similarities that must be accepted (leave-one-out training phrases).
        negative: similarities that must be refused (calibration phrases).

    Returns:
        ``(cutoff, record)``: accept a phrase when its similarity is ``>= cutoff``; the record
        holds the score ranges and how many of each side the cut-off gets wrong.

    Raises:
        ValueError: either side is empty.
    """
    pos, neg = np.asarray(positive, np.float64), np.asarray(negative, np.float64)
    if pos.size == 0 or neg.size == 0:
        raise ValueError("choose_cutoff needs positive and negative similarities")
    values = np.unique(np.concatenate([pos, neg]))
    gaps = (values[:-1] + values[1:]) / 2 if values.size > 1 else values
    score = [(pos >= g).mean() + (neg < g).mean() for g in gaps]
    cutoff = float(gaps[int(np.argmax(score))])
    record = {
        "rule": "midpoint of the gap maximising sensitivity + specificity, side-free similarity of leave-one-out "
                "training phrases vs calibration_unrelated",
        "positive_min": float(pos.min()), "negative_max": float(neg.max()),
        "positives": int(pos.size), "negatives": int(neg.size),
        "positives_refused": int((pos < cutoff).sum()), "negatives_accepted": int((neg >= cutoff).sum()),
    }
    return cutoff, record


@dataclass
class ResolvedPhrases:
    """Phrases accepted by a :class:`PhraseBank`.

    Attributes:
        phrases: as asked.
        embeddings: float32 (P, D) unit rows, what the model takes.
        nearest: the structure each phrase is taken as (see the module docstring).
        channels: that structure's label channel.
        similarity: the side-free similarity to that structure.
        margin: how much nearer that structure is than the nearest other one.
    """

    phrases: list[str]
    embeddings: torch.Tensor
    nearest: list[str]
    channels: list[int]
    similarity: list[float]
    margin: list[float]

    def mapping(self) -> list[str]:
        """One line per phrase: ``"left collar bone" -> left_clavicle (similarity 0.86, margin 0.73)``."""
        return [f'"{p}" -> {n} (similarity {s:.2f}, margin {m:.2f})'
                for p, n, s, m in zip(self.phrases, self.nearest, self.similarity, self.margin)]


_OPPOSITE = {"left": "right", "right": "left"}


def match_structures(sim: np.ndarray, owner: Sequence[int], structure_sides: Sequence[str],
                     phrase_sides: Sequence[str], taken: Optional[Sequence[int]] = None
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The structure each phrase is taken as, by side and side-free similarity.

    Args:
        sim: (P, T) side-free similarities of P phrases to T training phrases (``-inf`` leaves
            one out).
        owner: per training phrase, its structure's channel.
        structure_sides: per structure, its side (``left``, ``right`` or ``""``).
        phrase_sides: per phrase, its side.
        taken: per phrase, the structure to score instead of the nearest one (calibration:
            each training phrase as its own structure).

    Returns:
        ``(channel, similarity, margin)`` per phrase: the nearest structure of the phrase's side
        (-1 when it has none, with similarity and margin ``-inf``), its similarity, and that
        minus the similarity of the nearest other structure not of the opposite side (minus 0
        when there is none).
    """
    owner = np.asarray(owner)
    per = np.stack([sim[:, owner == c].max(axis=1) if (owner == c).any() else np.full(len(sim), -np.inf)
                    for c in range(len(structure_sides))], axis=1)
    sides = np.asarray(structure_sides)
    channel, best, margin = np.full(len(sim), -1), np.full(len(sim), -np.inf), np.full(len(sim), -np.inf)
    for i, side in enumerate(phrase_sides):
        scores = np.where(sides == side, per[i], -np.inf)
        if not np.isfinite(scores).any():
            continue
        channel[i] = c = int(np.argmax(scores)) if taken is None else int(taken[i])
        best[i] = per[i, c]
        rivals = (sides != _OPPOSITE.get(side)) & (np.arange(len(sides)) != c) & np.isfinite(per[i])
        margin[i] = best[i] - (per[i][rivals].max() if rivals.any() else 0.0)
    return channel, best, margin


def structure_sides(structures: Sequence[str], phrases: Sequence[str], index: Sequence[int],
                    heldout: Sequence[bool]) -> list[str]:
    """Per structure, the side its training phrases name (one side each: ``validate_text``)."""
    return [next(phrase_side(p) for p, i, h in zip(phrases, index, heldout) if i == c and not h)
            for c in range(len(structures))]


@dataclass
class PhraseBank:
    """Configured phrases with their embeddings, the structures they name, and the cut-off.

    Attributes:
        model: the text model (registry name) that made the embeddings.
        version: its pinned package version.
        structures: label channel names, in channel order.
        phrases: every configured phrase (training and held-out).
        structure_index: per phrase, its structure's channel.
        heldout: per phrase, True when it is never trained on.
        embeddings: float32 (N, D), unit rows (what the model takes).
        side_free: float32 (N, D), unit rows: the embeddings of the phrases without side words.
        cutoff: side-free similarity to the structure taken below which a phrase is refused.
        margin_floor: margin below which a phrase is refused.
        calibration: how the cut-off and the margin floor were chosen.
    """

    model: str
    version: str
    structures: list[str]
    phrases: list[str]
    structure_index: list[int]
    heldout: list[bool]
    embeddings: torch.Tensor
    side_free: torch.Tensor
    cutoff: float
    margin_floor: float
    calibration: dict[str, Any]

    # ------------------------------------------------------------------------------- building
    @classmethod
    def build(cls, cfg: Config, embedder: Optional[TextEmbedder] = None) -> "PhraseBank":
        """Embed the phrases of ``cfg.text`` and choose the refusal cut-off and margin floor.

        Args:
            cfg: a config with ``text.enabled``.
            embedder: the loaded text model (default: ``load_text_model(cfg.text.model)``).

        Returns:
            The bank.

        Raises:
            ConfigError: the cut-off cannot be chosen (no structure with two training
                phrases, or no calibration phrases) and ``text.refuse_below`` is not set.
            CheckpointError / CheckpointNotFoundError: the text model is missing or changed.
        """
        structures = text_structures(cfg)
        embedder = embedder or load_text_model(cfg.text.model)
        phrases, index, heldout = [], [], []
        for c, s in enumerate(structures):
            for phrase, held in [*((p, False) for p in s.phrases), *((p, True) for p in s.heldout)]:
                phrases.append(phrase)
                index.append(c)
                heldout.append(held)
        return cls._with_rules(embedder, cfg.text, [s.label for s in structures], phrases, index, heldout,
                               embedder.embed(phrases))

    @classmethod
    def _with_rules(cls, embedder: TextEmbedder, text: TextConfig, structures: list[str], phrases: list[str],
                    index: list[int], heldout: list[bool], emb: torch.Tensor) -> "PhraseBank":
        """The bank of embedded phrases, with their side-free embeddings and the refusal rules."""
        free = embedder.embed([side_free(p) for p in phrases])
        cutoff, floor, record = cls._calibrate(free, structure_sides(structures, phrases, index, heldout), index,
                                               heldout, embedder, text)
        return cls(embedder.spec.name, embedder.spec.version, structures, phrases, index, heldout, emb, free, cutoff,
                   floor, record)

    @staticmethod
    def _calibrate(free: torch.Tensor, sides: list[str], index: list[int], heldout: list[bool], embedder: TextEmbedder,
                   text: TextConfig) -> tuple[float, float, dict[str, Any]]:
        train = [i for i, h in enumerate(heldout) if not h]
        owner = np.asarray([index[i] for i in train])
        sim = (free[train] @ free[train].T).numpy().astype(np.float64)
        np.fill_diagonal(sim, -np.inf)  # leave one out
        known = np.asarray([a for a in range(len(train)) if (owner == owner[a]).sum() > 1], dtype=int)
        _, positive, margins = match_structures(sim[known], owner, sides, [sides[c] for c in owner[known]],
                                                taken=owner[known])
        if text.refuse_below is not None:
            cutoff, record = float(text.refuse_below), {"rule": "text.refuse_below", "value": float(text.refuse_below)}
        else:
            unrelated = list(text.calibration_unrelated)
            negative = np.empty(0)
            if known.size and unrelated:
                u = embedder.embed([side_free(p) for p in unrelated])
                _, negative, _ = match_structures((u @ free[train].T).numpy(), owner, sides,
                                                  [phrase_side(p) for p in unrelated])
                negative = negative[np.isfinite(negative)]  # a side no structure has is refused anyway
            if not known.size or not negative.size:
                raise ConfigError(
                    "text.refuse_below is null but cannot be chosen: give at least two training phrases for some "
                    "structure and some text.calibration_unrelated phrases, or set text.refuse_below"
                )
            cutoff, record = choose_cutoff(positive, negative)
            if record["positives_refused"] or record["negatives_accepted"]:
                log.warning(
                    "text refusal cut-off %.3f does not separate the calibration phrases: %d of %d leave-one-out "
                    "training phrases fall below it and %d of %d unrelated phrases above it; add phrasings or set "
                    "text.refuse_below", cutoff, record["positives_refused"], record["positives"],
                    record["negatives_accepted"], record["negatives"],
                )
        # Margins are differences of cosines (>= -2): -2 is no margin rule, when nothing measures one.
        floor = float(margins.min()) if known.size else -2.0
        return cutoff, floor, {**record, "margin_floor": floor,
                               "margin_rule": "lowest leave-one-out margin of a training phrase"}

    # ---------------------------------------------------------------------------------- lookup
    @property
    def sides(self) -> list[str]:
        """Per structure, its side (``left``, ``right`` or ``""``)."""
        return structure_sides(self.structures, self.phrases, self.structure_index, self.heldout)

    def train_ids(self) -> list[list[int]]:
        """Per structure channel, the indices (into ``phrases``) of its training phrases."""
        return [[i for i, (c, h) in enumerate(zip(self.structure_index, self.heldout)) if c == ch and not h]
                for ch in range(len(self.structures))]

    def structure_queries(self) -> "ResolvedPhrases":
        """Every structure asked by its first training phrase, in channel order: the model then
        answers like a multi-label model (validation, ``compare``, inference without phrases)."""
        return self.resolve([self.phrases[ids[0]] for ids in self.train_ids()])

    def phrases_of(self, structure: str, heldout: bool) -> list[str]:
        """The training (or held-out) phrases of one structure."""
        c = self.structures.index(structure)
        return [p for p, i, h in zip(self.phrases, self.structure_index, self.heldout) if i == c and h == heldout]

    def known_structures(self) -> str:
        """One line per structure with its training phrases, for refusal messages."""
        return "; ".join(f"{s} ({', '.join(repr(p) for p in self.phrases_of(s, False))})" for s in self.structures)

    def resolve(self, phrases: Sequence[str], embedder: Optional[TextEmbedder] = None) -> ResolvedPhrases:
        """Embeddings of phrases the model may be asked and the structures they are taken as,
        refusing those it does not know (the rule: the module docstring).

        Configured phrases use the cached embeddings (no text model needed); others are
        embedded with ``embedder`` (default: the bank's text model, loaded on demand).

        Args:
            phrases: one or more phrases.
            embedder: a loaded text model, which must be the one the bank was built with.

        Returns:
            The accepted phrases with their embeddings.

        Raises:
            UnknownPhraseError: an empty phrase, or one that is not near one structure of its
                side and clearly nearer it than the others (all such phrases are named, with
                the known structures).
            CheckpointError / CheckpointNotFoundError: a new phrase needs the text model and it
                is missing or is not the one the bank was built with.
        """
        phrases = [str(p) for p in phrases]
        if not phrases or any(not phrase_key(p) for p in phrases):
            raise UnknownPhraseError(f"give one or more non-empty phrases; this model knows: {self.known_structures()}")
        cached = {phrase_key(p): i for i, p in enumerate(self.phrases)}
        new = list(dict.fromkeys(phrase_key(p) for p in phrases if phrase_key(p) not in cached))
        fresh: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        if new:
            both = checked_text_model(self.model, self.version, embedder).embed(new + [side_free(p) for p in new])
            fresh = {p: (both[i], both[len(new) + i]) for i, p in enumerate(new)}
        pairs = [(self.embeddings[cached[k]], self.side_free[cached[k]]) if k in cached else fresh[k]
                 for k in map(phrase_key, phrases)]
        emb, free = torch.stack([e for e, _ in pairs]), torch.stack([f for _, f in pairs])
        train = [i for i, h in enumerate(self.heldout) if not h]
        channel, sim, margin = match_structures((free @ self.side_free[train].T).numpy().astype(np.float64),
                                                [self.structure_index[i] for i in train], self.sides,
                                                [phrase_side(p) for p in phrases])
        refused = [f"{p!r} (no structure on the {phrase_side(p)})" if c < 0 else
                   f"{p!r} (taken as {self.structures[c]} by {side_free(p)!r}: similarity {s:.2f}, margin {m:.2f})"
                   for p, c, s, m in zip(phrases, channel, sim, margin)
                   if c < 0 or s < self.cutoff or m < self.margin_floor]
        if refused:
            raise UnknownPhraseError(
                f"refused {', '.join(refused)}: a phrase is accepted when, without its side words, it reaches "
                f"similarity {self.cutoff:.2f} to a structure of its side (left, right or none) and is nearer that "
                f"one by a margin of at least {self.margin_floor:.2f} than the next. Known structures: "
                f"{self.known_structures()}"
            )
        return ResolvedPhrases(phrases, emb, [self.structures[c] for c in channel], [int(c) for c in channel],
                               [round(float(v), 4) for v in sim], [round(float(v), 4) for v in margin])

    # --------------------------------------------------------------------------------- storage
    def to_payload(self) -> dict[str, Any]:
        """Plain tensors and builtins for the checkpoint (``torch.load(weights_only=True)`` reads them)."""
        spec = get_text_model_spec(self.model)
        return {"model": self.model, "version": self.version, "files": dict(spec.files),
                "structures": list(self.structures), "phrases": list(self.phrases),
                "structure_index": list(self.structure_index), "heldout": list(self.heldout),
                "embeddings": self.embeddings.clone(), "side_free": self.side_free.clone(),
                "cutoff": float(self.cutoff), "margin_floor": float(self.margin_floor),
                "calibration": dict(self.calibration)}

    @classmethod
    def from_payload(cls, payload: Any, text: TextConfig, source: str = "checkpoint") -> "PhraseBank":
        """Rebuild a bank from :meth:`to_payload`'s dict.

        A bank written before phrases were matched by side (no ``side_free`` embeddings) gets
        them and its rules now, from the text model and ``text`` (the checkpoint's own section).

        Raises:
            CheckpointError: keys missing or the embeddings do not fit the phrases.
            CheckpointNotFoundError: an older bank needs the text model and it is not installed.
        """
        keys = ("model", "version", "structures", "phrases", "structure_index", "heldout", "embeddings", "cutoff")
        if not isinstance(payload, dict) or any(k not in payload for k in keys):
            raise CheckpointError(f"{source}: the text-prompted model's phrase bank is missing or incomplete "
                                  f"(needs {', '.join(keys)})")
        emb, free = payload["embeddings"], payload.get("side_free", payload["embeddings"])
        n = len(payload["phrases"])
        if any(not isinstance(e, torch.Tensor) or e.ndim != 2 or e.shape[0] != n for e in (emb, free)) or \
                len(payload["structure_index"]) != n or len(payload["heldout"]) != n:
            raise CheckpointError(f"{source}: the phrase bank's embeddings do not fit its {n} phrases")
        fields = (list(payload["structures"]), list(payload["phrases"]), [int(i) for i in payload["structure_index"]],
                  [bool(h) for h in payload["heldout"]], emb.float())
        if "side_free" not in payload:
            log.warning("%s: its phrase bank predates matching phrases by side; choosing its rules now with %s",
                        source, payload["model"])
            return cls._with_rules(checked_text_model(payload["model"], payload["version"]), text, *fields)
        return cls(payload["model"], payload["version"], *fields, free.float(), float(payload["cutoff"]),
                   float(payload.get("margin_floor", -2.0)), dict(payload.get("calibration", {})))


def checked_text_model(model: str, version: str, embedder: Optional[TextEmbedder] = None) -> TextEmbedder:
    """The text model a bank was built with (``embedder``, or loaded).

    Raises:
        CheckpointError / CheckpointNotFoundError: it is missing, or is another model or version.
    """
    embedder = embedder or load_text_model(model)
    if embedder.spec.name != model or embedder.spec.version != version:
        raise CheckpointError(
            f"this checkpoint's phrases were embedded by {model} {version}, not by "
            f"{embedder.spec.name} {embedder.spec.version}: {get_text_model_spec(model).install_hint}"
        )
    return embedder


def query_config(cfg: Config, names: Sequence[str], channels: Sequence[int]) -> Config:
    """The config of a text-prompted model's output when asked several phrases at once.

    The model returns one channel per phrase; this config describes exactly those channels
    (multilabel, one label per phrase) so prediction, binarisation, post-processing and the
    output writers treat them like the channels of a multi-label model.

    Args:
        cfg: the model's config.
        names: one channel name per phrase (used in output file names).
        channels: per phrase, the label channel of the structure it names (its nearest
            training phrase's); a per-label ``postprocess.keep_largest`` follows it, so "left
            lung" keeps one component where "lungs" keeps two.

    Returns:
        A copy of ``cfg`` with ``data.labels`` / ``data.label_names`` = ``names``.
    """
    if len(names) != len(channels):
        raise ValueError(f"query_config: {len(names)} names for {len(channels)} channels")
    data = dataclasses.replace(cfg.data, labels=list(names), label_names=list(names), task="multilabel")
    keep = cfg.postprocess.keep_largest
    if len(keep) > 1:  # one count per label: take each phrase's structure's
        keep = [keep[c] for c in channels]
    return dataclasses.replace(cfg, data=data, postprocess=dataclasses.replace(cfg.postprocess, keep_largest=list(keep)))
