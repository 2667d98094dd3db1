"""The phrases a text-prompted model knows, their cached embeddings and the refusal rule.

A :class:`PhraseBank` is built once when training starts (the text model embeds every
configured phrase) and is stored in the checkpoint, so inference with a configured phrase needs
no text model. Any other phrase is embedded by the same text model and accepted only when its
cosine similarity to the nearest *training* phrase reaches the cut-off; otherwise it is refused
with the list of known structures, never turned into an arbitrary mask.

Cut-off rule (``text.refuse_below: null``), computed from phrase embeddings only:

* positives: for every training phrase, its highest similarity to the *other* training phrases
  of the same structure (leave one out: how close a new phrasing of a known structure lands);
* negatives: for every ``text.calibration_unrelated`` phrase, its highest similarity to any
  training phrase;
* the cut-off is the midpoint of the gap between two neighbouring scores that maximises
  sensitivity + specificity over these positives and negatives. When they do not separate,
  that best gap is still used and a warning says how many fall on the wrong side.

Held-out paraphrases and evaluation phrases take no part in it.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np
import torch

from ..config import Config, ConfigError, phrase_key, text_structures
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
        "rule": "midpoint of the gap maximising sensitivity + specificity, leave-one-out training phrases vs calibration_unrelated",
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
        nearest: the structure of each phrase's nearest training phrase.
        channels: that structure's label channel.
        similarity: that nearest similarity.
    """

    phrases: list[str]
    embeddings: torch.Tensor
    nearest: list[str]
    channels: list[int]
    similarity: list[float]


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
        embeddings: float32 (N, D), unit rows.
        cutoff: similarity to the nearest training phrase below which a phrase is refused.
        calibration: how the cut-off was chosen.
    """

    model: str
    version: str
    structures: list[str]
    phrases: list[str]
    structure_index: list[int]
    heldout: list[bool]
    embeddings: torch.Tensor
    cutoff: float
    calibration: dict[str, Any]

    # ------------------------------------------------------------------------------- building
    @classmethod
    def build(cls, cfg: Config, embedder: Optional[TextEmbedder] = None) -> "PhraseBank":
        """Embed the phrases of ``cfg.text`` and choose the refusal cut-off.

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
        t = cfg.text
        structures = text_structures(cfg)
        embedder = embedder or load_text_model(t.model)
        phrases, index, heldout = [], [], []
        for c, s in enumerate(structures):
            for phrase, held in [*((p, False) for p in s.phrases), *((p, True) for p in s.heldout)]:
                phrases.append(phrase)
                index.append(c)
                heldout.append(held)
        emb = embedder.embed(phrases)
        if t.refuse_below is not None:
            cutoff, record = float(t.refuse_below), {"rule": "text.refuse_below", "value": float(t.refuse_below)}
        else:
            cutoff, record = cls._calibrate(emb, index, heldout, embedder, t.calibration_unrelated)
        return cls(embedder.spec.name, embedder.spec.version, [s.label for s in structures], phrases, index,
                   heldout, emb, cutoff, record)

    @staticmethod
    def _calibrate(emb: torch.Tensor, index: list[int], heldout: list[bool], embedder: TextEmbedder,
                   unrelated: Sequence[str]) -> tuple[float, dict[str, Any]]:
        train = [i for i, h in enumerate(heldout) if not h]
        sim = (emb[train] @ emb[train].T).numpy()
        owner = np.asarray([index[i] for i in train])
        positive = [sim[a][(owner == owner[a]) & (np.arange(len(train)) != a)].max()
                    for a in range(len(train)) if (owner == owner[a]).sum() > 1]
        if not positive or not unrelated:
            raise ConfigError(
                "text.refuse_below is null but cannot be chosen: give at least two training phrases for some "
                "structure and some text.calibration_unrelated phrases, or set text.refuse_below"
            )
        negative = (embedder.embed(list(unrelated)) @ emb[train].T).max(dim=1).values.numpy()
        cutoff, record = choose_cutoff(np.asarray(positive), negative)
        if record["positives_refused"] or record["negatives_accepted"]:
            log.warning(
                "text refusal cut-off %.3f does not separate the calibration phrases: %d of %d leave-one-out training "
                "phrases fall below it and %d of %d unrelated phrases above it; add phrasings or set text.refuse_below",
                cutoff, record["positives_refused"], record["positives"], record["negatives_accepted"],
                record["negatives"],
            )
        return cutoff, record

    # ---------------------------------------------------------------------------------- lookup
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
        """Embeddings of phrases the model may be asked, refusing those it does not know.

        Configured phrases use the cached embeddings (no text model needed); others are
        embedded with ``embedder`` (default: the bank's text model, loaded on demand).

        Args:
            phrases: one or more phrases.
            embedder: a loaded text model, which must be the one the bank was built with.

        Returns:
            The accepted phrases with their embeddings.

        Raises:
            UnknownPhraseError: an empty phrase, or one whose similarity to every training
                phrase is below the cut-off (all such phrases are named, with the known
                structures).
            CheckpointError / CheckpointNotFoundError: a new phrase needs the text model and it
                is missing or is not the one the bank was built with.
        """
        phrases = [str(p) for p in phrases]
        if not phrases or any(not phrase_key(p) for p in phrases):
            raise UnknownPhraseError(f"give one or more non-empty phrases; this model knows: {self.known_structures()}")
        cached = {phrase_key(p): i for i, p in enumerate(self.phrases)}
        new = [p for p in phrases if phrase_key(p) not in cached]
        fresh: dict[str, torch.Tensor] = {}
        if new:
            embedder = embedder or load_text_model(self.model)
            if embedder.spec.name != self.model or embedder.spec.version != self.version:
                raise CheckpointError(
                    f"this checkpoint's phrases were embedded by {self.model} {self.version}, not by "
                    f"{embedder.spec.name} {embedder.spec.version}: {get_text_model_spec(self.model).install_hint}"
                )
            fresh = {phrase_key(p): e for p, e in zip(new, embedder.embed(new))}
        emb = torch.stack([self.embeddings[cached[phrase_key(p)]] if phrase_key(p) in cached else fresh[phrase_key(p)]
                           for p in phrases])
        train = [i for i, h in enumerate(self.heldout) if not h]
        best, arg = (emb @ self.embeddings[train].T).max(dim=1)
        channels = [self.structure_index[train[a]] for a in arg.tolist()]
        nearest = [self.structures[c] for c in channels]
        refused = [f"{p!r} (nearest {self.phrases[train[a]]!r} of {n}, similarity {s:.2f})"
                   for p, s, a, n in zip(phrases, best.tolist(), arg.tolist(), nearest) if s < self.cutoff]
        if refused:
            raise UnknownPhraseError(
                f"refused {', '.join(refused)}: below the similarity cut-off {self.cutoff:.2f} to every phrase this "
                f"model was trained on. Known structures: {self.known_structures()}"
            )
        return ResolvedPhrases(phrases, emb, nearest, channels, [round(s, 4) for s in best.tolist()])

    # --------------------------------------------------------------------------------- storage
    def to_payload(self) -> dict[str, Any]:
        """Plain tensors and builtins for the checkpoint (``torch.load(weights_only=True)`` reads them)."""
        spec = get_text_model_spec(self.model)
        return {"model": self.model, "version": self.version, "files": dict(spec.files),
                "structures": list(self.structures), "phrases": list(self.phrases),
                "structure_index": list(self.structure_index), "heldout": list(self.heldout),
                "embeddings": self.embeddings.clone(), "cutoff": float(self.cutoff), "calibration": dict(self.calibration)}

    @classmethod
    def from_payload(cls, payload: Any, source: str = "checkpoint") -> "PhraseBank":
        """Rebuild a bank from :meth:`to_payload`'s dict.

        Raises:
            CheckpointError: keys missing or the embeddings do not fit the phrases.
        """
        keys = ("model", "version", "structures", "phrases", "structure_index", "heldout", "embeddings", "cutoff")
        if not isinstance(payload, dict) or any(k not in payload for k in keys):
            raise CheckpointError(f"{source}: the text-prompted model's phrase bank is missing or incomplete "
                                  f"(needs {', '.join(keys)})")
        emb = payload["embeddings"]
        n = len(payload["phrases"])
        if not isinstance(emb, torch.Tensor) or emb.ndim != 2 or emb.shape[0] != n or \
                len(payload["structure_index"]) != n or len(payload["heldout"]) != n:
            raise CheckpointError(f"{source}: the phrase bank's embeddings do not fit its {n} phrases")
        return cls(payload["model"], payload["version"], list(payload["structures"]), list(payload["phrases"]),
                   [int(i) for i in payload["structure_index"]], [bool(h) for h in payload["heldout"]],
                   emb.float(), float(payload["cutoff"]), dict(payload.get("calibration", {})))


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
