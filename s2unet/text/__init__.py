"""Phrase embeddings for text-prompted models: the registered text models and the phrase bank.

``load_text_model(name)`` finds, verifies (version, sha256) and loads a pretrained phrase
embedder from its installed package; :class:`PhraseBank` holds a model's configured phrases,
their cached embeddings and the rule that refuses unknown phrases. Models take the embedding
tensor; they read only a text model's embedding width from the registry.
"""
from __future__ import annotations

from .bank import PhraseBank, ResolvedPhrases, UnknownPhraseError, choose_cutoff, query_config
from .embedders import TEXT_MODELS, TextEmbedder, TextModelSpec, get_text_model_spec, load_text_model, locate_text_model

__all__ = [
    "PhraseBank", "ResolvedPhrases", "TEXT_MODELS", "TextEmbedder", "TextModelSpec", "UnknownPhraseError",
    "choose_cutoff", "get_text_model_spec", "load_text_model", "locate_text_model", "query_config",
]
