"""What ``infer.py --text`` asks a text-prompted checkpoint: the phrases, the structures they are
taken as (which name the outputs) and the config of one output channel per phrase."""
from __future__ import annotations

from typing import Optional, Sequence

from ..config import Config
from ..data import DataError
from ..models.checkpoint import LoadedModel
from ..predict import foreground_names
from ..text import ResolvedPhrases, query_config


# A phrase names a structure in a few words; a longer one is a mistake (a pasted file, a loop).
MAX_PHRASE_CHARS = 100


def text_queries(loaded: LoadedModel, cfg: Config,
                  text: Optional[Sequence[str]]) -> tuple[Config, Optional[ResolvedPhrases]]:
    """The config of the outputs and the accepted phrases of a (possibly) text-prompted checkpoint.

    Args:
        loaded: the checkpoint.
        cfg: its config with the caller's post-processing changes.
        text: phrases asked for; None asks a text-prompted model for every structure it knows
            (by its first training phrase, outputs named after the structure).

    Returns:
        ``(cfg, phrases)``: for a text-prompted model a config with one channel per phrase,
        named after the structure the phrase is taken as, and the phrases' embeddings;
        otherwise ``cfg`` and None.

    Raises:
        DataError: phrases for a model that takes none, a phrase longer than
            :data:`MAX_PHRASE_CHARS`, or two phrases taken as the same structure.
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
                        f"{MAX_PHRASE_CHARS} (a phrase names a structure in a few words)")
    resolved = bank.resolve(list(text))
    clash = sorted({n for n in resolved.nearest if resolved.nearest.count(n) > 1})
    if clash:
        raise DataError(f"--text: {', '.join(resolved.mapping())}: ask each structure once (outputs are named "
                        f"after the structure, {', '.join(clash)} would be written twice)")
    return query_config(cfg, resolved.nearest, resolved.channels), resolved
