#!/usr/bin/env python
"""Score text-prompted checkpoints against a multi-label one on the same held-out cases.

    python bench/text_prompted.py --text RUN_FILM/best.pt --text RUN_XATTN/best.pt \\
        --multilabel RUN_MULTILABEL/best.pt --split test --out bench/results/text_prompted

Per structure: Dice of the multi-label model, and of each text-prompted model asked with its
training phrasings and with its held-out paraphrases (mean over the phrasings of the mean over
cases); every model binarised at its own validation-tuned threshold. Then the refusal rate on
unrelated phrases (none of them in ``text.calibration_unrelated``) and the acceptance rate of
the held-out paraphrases. The cases are the ``--split`` cases of the runs' ``split.json``, which
must be the same for every checkpoint. Writes ``<out>.json`` and ``<out>.md``.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from s2unet.engine.records import run_split_cases  # noqa: E402
from s2unet.io import write_json, write_text  # noqa: E402
from s2unet.models.checkpoint import LoadedModel, load_model_checkpoint  # noqa: E402
from s2unet.predict import Predictor, foreground_names, load_case_target  # noqa: E402
from s2unet.metrics import metric_row  # noqa: E402
from s2unet.text import UnknownPhraseError, query_config  # noqa: E402

UNRELATED = [
    "kidney", "the weather", "brain tumor", "femur", "a cat on a sofa", "stock market", "ground-glass opacity",
    "knee joint", "pancreas", "skull", "left kidney", "right femur", "gallbladder", "a bowl of soup",
]


def _cases(loaded: LoadedModel, split: str) -> list:
    """The ``split`` cases of the run a checkpoint belongs to."""
    return run_split_cases(loaded.path.parent, loaded.config.data, split)


def _dice_per_channel(predictor: Predictor, cases: Sequence, targets: Sequence[np.ndarray],
                      channel_target: Sequence[int]) -> np.ndarray:
    """(channels, cases) Dice of every predicted channel against its structure's reference."""
    out = []
    for case, target in zip(cases, targets):
        prob, _ = predictor.predict_case(case)
        pred = predictor.clean(predictor.binarize(prob), None)  # the config's post-processing, as validation does
        row = metric_row(pred, target[list(channel_target)], [str(i) for i in range(len(channel_target))])
        out.append([row["dice"]] if len(channel_target) == 1 else [row[f"dice/{i}"] for i in range(len(channel_target))])
    return np.asarray(out).T


def score_multilabel(loaded: LoadedModel, cases: Sequence, targets: Sequence[np.ndarray]) -> dict[str, float]:
    """Per-label mean Dice of a multi-label model."""
    names = foreground_names(loaded.config)
    predictor = Predictor(loaded.model, loaded.config, threshold=loaded.threshold, calibration=loaded.calibration)
    dice = _dice_per_channel(predictor, cases, targets, list(range(len(names))))
    return {n: float(d.mean()) for n, d in zip(names, dice)}


def score_text(loaded: LoadedModel, cases: Sequence, targets: Sequence[np.ndarray]) -> dict[str, Any]:
    """Per-structure Dice with training and held-out phrasings, and the refusal figures."""
    bank = loaded.text
    accepted, refused_heldout = [], []
    for i, held in enumerate(bank.heldout):
        try:
            bank.resolve([bank.phrases[i]])
            accepted.append(i)
        except UnknownPhraseError:
            refused_heldout.append(bank.phrases[i])
    # Refused held-out phrases would be refused at inference too: they are not scored.
    phrases = [bank.phrases[i] for i in accepted]
    resolved = bank.resolve(phrases)
    cfg = query_config(loaded.config, [f"p{i}" for i in range(len(phrases))], resolved.channels)
    predictor = Predictor(loaded.model, cfg, threshold=loaded.threshold, text=resolved.embeddings,
                          calibration=loaded.calibration)
    dice = _dice_per_channel(predictor, cases, targets, [bank.structure_index[i] for i in accepted])
    per_phrase = {p: float(d.mean()) for p, d in zip(phrases, dice)}
    structures = {}
    for c, name in enumerate(bank.structures):
        entry = {}
        for key, held in (("train", False), ("heldout", True)):
            values = [per_phrase[bank.phrases[i]] for i in accepted if bank.structure_index[i] == c and bank.heldout[i] == held]
            entry[key] = float(np.mean(values)) if values else None
        structures[name] = entry
    refused = []
    for phrase in UNRELATED:
        try:
            bank.resolve([phrase])
        except UnknownPhraseError:
            refused.append(phrase)
    return {
        "structures": structures, "per_phrase": per_phrase, "cutoff": bank.cutoff, "calibration": bank.calibration,
        "heldout_accepted": f"{sum(bank.heldout) - len(refused_heldout)}/{sum(bank.heldout)}",
        "heldout_refused": refused_heldout,
        "unrelated_refused": f"{len(refused)}/{len(UNRELATED)}",
        "unrelated_accepted": [p for p in UNRELATED if p not in refused],
        "injection": loaded.config.text.injection,
    }


def _table(result: dict[str, Any]) -> str:
    """The Markdown table of a result."""
    multi = result["multilabel"]
    texts = result["text"]
    head = ["structure", "multi-label"]
    for name, t in texts.items():
        head += [f"{t['injection']}: training phrasings", f"{t['injection']}: held-out paraphrases"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    fmt = lambda v: "–" if v is None else f"{v:.3f}"  # noqa: E731
    structures = list(next(iter(texts.values()))["structures"]) if texts else list(multi)
    for s in [*structures, "mean"]:
        row = [s, fmt(np.mean(list(multi.values())) if s == "mean" else multi.get(s))]
        for t in texts.values():
            for key in ("train", "heldout"):
                vals = [v[key] for v in t["structures"].values() if v[key] is not None]
                row.append(fmt(np.mean(vals) if s == "mean" and vals else t["structures"][s][key] if s != "mean" else None))
        lines.append("| " + " | ".join(row) + " |")
    for t in texts.values():
        lines.append("")
        lines.append(f"{t['injection']}: cut-off {t['cutoff']:.3f}; unrelated phrases refused {t['unrelated_refused']}"
                     f" (accepted: {', '.join(t['unrelated_accepted']) or 'none'}); held-out paraphrases accepted "
                     f"{t['heldout_accepted']}")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--text", action="append", required=True, help="a text-prompted best.pt (repeatable)")
    p.add_argument("--multilabel", required=True, help="the multi-label best.pt with the same labels")
    p.add_argument("--split", default="test", choices=["val", "test"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", required=True, help="output path without suffix (.json and .md are written)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    multi = load_model_checkpoint(args.multilabel)
    cases = _cases(multi, args.split)
    targets = [load_case_target(c, multi.config) for c in cases]
    result: dict[str, Any] = {"split": args.split, "cases": len(cases), "multilabel_checkpoint": args.multilabel,
                              "multilabel": score_multilabel(multi, cases, targets), "text": {}}
    for path in args.text:
        loaded = load_model_checkpoint(path)
        if loaded.text is None:
            raise SystemExit(f"{path} is not a text-prompted checkpoint")
        if [c.case_id for c in _cases(loaded, args.split)] != [c.case_id for c in cases]:
            raise SystemExit(f"{path} has other {args.split} cases than {args.multilabel}: not comparable")
        if loaded.text.structures != foreground_names(multi.config):
            raise SystemExit(f"{path} segments {loaded.text.structures}, {args.multilabel} {foreground_names(multi.config)}")
        result["text"][path] = score_text(loaded, cases, targets)
    result["seconds"] = round(time.perf_counter() - started, 1)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out.with_suffix(".json"), result)
    write_text(out.with_suffix(".md"), _table(result))
    print(_table(result))


if __name__ == "__main__":
    main()
