"""What ``infer.py --text`` asks a text-prompted checkpoint: the phrases, their output names and
the config of one output channel per phrase."""
from __future__ import annotations

import re
from typing import Optional, Sequence

from ..config import Config
from ..data import DataError
from ..models.checkpoint import LoadedModel
from ..predict import foreground_names
from ..text import ResolvedPhrases, query_config


# Longer phrases are refused: a phrase names its output file, and file names stop at 255 bytes.
MAX_PHRASE_CHARS = 100


def phrase_name(phrase: str) -> str:
    """A phrase as a file-name part: lower case, runs of other characters as one ``_``."""
    return re.sub(r"[^a-z0-9]+", "_", phrase.lower()).strip("_")


def text_queries(loaded: LoadedModel, cfg: Config,
                  text: Optional[Sequence[str]]) -> tuple[Config, Optional[ResolvedPhrases]]:
    """The config of the outputs and the accepted phrases of a (possibly) text-prompted checkpoint.

    Args:
        loaded: the checkpoint.
        cfg: its config with the caller's post-processing changes.
        text: phrases asked for; None asks a text-prompted model for every structure it knows
            (by its first training phrase, outputs named after the structure).

    Returns:
        ``(cfg, phrases)``: for a text-prompted model a config with one channel per phrase and
        the phrases' embeddings; otherwise ``cfg`` and None.

    Raises:
        DataError: phrases for a model that takes none, a phrase longer than
            :data:`MAX_PHRASE_CHARS`, or two phrases with the same file name.
        UnknownPhraseError: a phrase is refused (the known structures are listed).
    """
    bank = loaded.text
    if bank is None:
        if text:
            raise DataError(f"--text: {loaded.path} is not a text-prompted checkpoint; its labels are "
                            f"{', '.join(foreground_names(cfg))}")
        return cfg, None
    if not text:
        queries = bank.structure_queries()
        return query_config(cfg, bank.structures, queries.channels), queries
    long = [t for t in text if len(t) > MAX_PHRASE_CHARS]
    if long:
        raise DataError(f"--text: a phrase of {len(long[0])} characters ({long[0][:40]!r}...); give at most "
                        f"{MAX_PHRASE_CHARS} (it names the output file)")
    names = [phrase_name(t) for t in text]
    clash = sorted({n for n in names if names.count(n) > 1})
    if clash or not all(names):
        raise DataError(f"--text: each phrase needs its own output name (letters or digits); {list(text)} give {names}")
    resolved = bank.resolve(list(text))
    return query_config(cfg, names, resolved.channels), resolved
