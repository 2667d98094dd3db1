#!/usr/bin/env python
"""The adaptation curve of issue #22: a source model adapted with 5 / 10 / 20 labelled slices of
the other source, against the unadapted model and training from scratch, over seeds.

``scripts/adapt_curve.sh curve SRC/best.pt`` drives it; the two steps are:

``labels``: a labels folder as the label app saves one (``s2unet label --out``): the volumes
of the data folder linked into ``OUT/images`` and ``OUT/<label folder>``, except the pool's
cases, whose masks are written (``CaseImage.write_like``, as the app writes them) with only the
drawn slices labelled and every other slice empty, and recorded in ``OUT/labelled_slices.json``
by the app's writer (:func:`s2unet.data.labelled.write_case_slices`). The N slices are the first
N of one seeded permutation of the pool's slices (:func:`s2unet.data.choose_train_items`, the
draw of ``data.max_train_slices``), so the 5 slices of a seed are among its 10. Pool cases
without a drawn slice are left out. Prints the pool cases that have one (the training list).

    python bench/adapt_curve.py labels --pool case11,case13,case16 --n 10 --seed 0 --out runs/adapt_labels/10_s0

``report``: the table from the runs' test records (``metrics.jsonl``) and the unadapted model
scored on the same test cases by the inference Predictor; writes ``<out>.json`` and ``<out>.md``.

    python bench/adapt_curve.py report --checkpoint SRC/best.pt --runs runs --sizes 5,10,20 --seeds 0,1,2 --steps 60
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as ``python bench/adapt_curve.py`` from a checkout
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from bench.intensity_shift import case_dice  # noqa: E402
from bench.speed_report import command_line, markdown_table, write_result  # noqa: E402
from s2unet.config import ConfigError, DataConfig, load_config  # noqa: E402
from s2unet.data import DataError, choose_train_items, find_cases, read_case, resolve_dir  # noqa: E402
from s2unet.data.labelled import MANIFEST_NAME, write_case_slices  # noqa: E402
from s2unet.engine.records import environment_versions, run_split_cases  # noqa: E402
from s2unet.models.checkpoint import load_model_checkpoint  # noqa: E402
from s2unet.predict import Predictor, foreground_names, load_case_target  # noqa: E402
from s2unet.weights import CheckpointError  # noqa: E402

ARMS = {"rehearse": "--init-from + rehearsal (data.rehearse_from)", "scratch": "from scratch, the same slices"}


def run_name(arm: str, n: int, steps: int, seed: int) -> str:
    """The run name ``scripts/adapt_curve.sh curve`` gives an arm (kept in one place)."""
    return f"xs_curve_{arm}_{n}_{steps}st_s{seed}"


def write_labels(data: DataConfig, pool: Sequence[str], n: int, seed: int, out: Path) -> list[str]:
    """Write the labels folder of N drawn pool slices (see the module docstring).

    Args:
        data: the data config of the shifted data (``root``, ``images``, ``labels[0]``,
            ``axis``, ``reorient``).
        pool: the case ids the N slices are drawn from.
        n: labelled slices.
        seed: the draw's seed.
        out: the labels folder (must not exist: a curve never reuses another draw's folder).

    Returns:
        The pool cases with at least one labelled slice, in pool order.

    Raises:
        DataError: an existing ``out``, pool cases not in the data, or more slices than the pool has.
    """
    if out.exists():
        raise DataError(f"{out} exists; remove it or choose another --out")
    cases = {c.case_id: c for c in find_cases(data)}
    missing = [c for c in pool if c not in cases]
    if missing:
        raise DataError(f"--pool: {', '.join(missing)} not in {resolve_dir(data, data.images)}")
    masks = {c: read_case(cases[c].labels[0], "volume", data.served) for c in pool}
    items = [(c, k) for c in pool for k in range(masks[c].shape[data.axis])]
    if n > len(items):
        raise DataError(f"--n {n}: the pool ({', '.join(pool)}) has only {len(items)} slices")
    drawn: dict[str, list[int]] = {}
    for i in choose_train_items(len(items), n, seed):
        drawn.setdefault(items[i][0], []).append(items[i][1])
    final, out = out, out.with_name(out.name + ".partial")  # renamed when complete: no half-written folder
    shutil.rmtree(out, ignore_errors=True)
    label_dir = out / Path(data.labels[0]).name
    (out / "images").mkdir(parents=True)
    label_dir.mkdir()
    for case_id, case in cases.items():
        if case_id in pool and case_id not in drawn:
            continue
        os.symlink(case.image.resolve(), out / "images" / case.image.name)
        if case_id not in drawn:  # labelled whole: the reference as it is
            os.symlink(case.labels[0].resolve(), label_dir / case.labels[0].name)
            continue
        # The app records the slices before it writes the masks (a half-saved case is refused, not trained).
        write_case_slices(out / MANIFEST_NAME, case_id, drawn[case_id], data.axis, data.reorient, data.orientation)
        mask = masks[case_id]
        served = np.asarray(mask.get_array()) > 0
        keep = np.zeros(served.shape[data.axis], bool)
        keep[drawn[case_id]] = True
        shape = [1, 1, 1]
        shape[data.axis] = -1
        mask.write_like(served & keep.reshape(shape), label_dir / case.labels[0].name, np.uint8, binary=True)
    out.rename(final)
    return [c for c in pool if c in drawn]


def last_test_record(run_dir: Path) -> dict[str, Any]:
    """The ``test`` record of a finished run (the last one in its ``metrics.jsonl``).

    Raises:
        DataError: no such run or no test record (naming the run).
    """
    path = run_dir / "metrics.jsonl"
    try:
        records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read the run's metrics ({type(exc).__name__}: {exc})") from None
    tests = [r for r in records if r.get("kind") == "test"]
    if not tests or "dice_by_threshold" not in tests[-1]:
        raise DataError(f"{path}: no test record with dice_by_threshold (did the run finish?)")
    return tests[-1]


def unadapted(checkpoint: Path, run_dir: Path) -> dict[str, Any]:
    """The source model on a curve run's test cases, at its stored threshold and at 0.5."""
    loaded = load_model_checkpoint(checkpoint)
    cfg = loaded.config
    cases = run_split_cases(run_dir, cfg.data, "test")  # the same case files, found in the source's data
    predictor = Predictor(loaded.model, cfg, threshold=loaded.threshold, text=loaded.structure_text)
    names = foreground_names(cfg)
    stored, half = [], []
    for case in cases:
        target = load_case_target(case, cfg)
        prob, spacing = predictor.predict_case(case)
        axis = None if spacing is None else cfg.data.axis
        stored.append(case_dice(predictor, prob, target, names, axis))
        half.append(case_dice(predictor, prob, target, names, axis, 0.5))
    return {"threshold": loaded.threshold, "dice": float(np.mean(stored)), "dice_at_0.5": float(np.mean(half)),
            "cases": [c.case_id for c in cases]}


def collect(runs: Path, sizes: Sequence[int], seeds: Sequence[int], steps: int) -> dict[str, Any]:
    """Every arm's test scores per size and seed, from ``runs/<name>-latest``; all runs checked first."""
    out: dict[str, Any] = {}
    for arm in ARMS:
        for n in sizes:
            per_seed = {}
            for seed in seeds:
                run_dir = runs / f"{run_name(arm, n, steps, seed)}-latest"
                rec = last_test_record(run_dir)
                per_seed[str(seed)] = {"run": str(run_dir.resolve()), "threshold": rec["threshold"], "dice": rec["dice"],
                                       "dice_at_0.5": rec["dice_by_threshold"]["0.50"]}
            out.setdefault(arm, {})[str(n)] = {
                "seeds": per_seed, "mean_dice": float(np.mean([s["dice"] for s in per_seed.values()])),
                "mean_dice_at_0.5": float(np.mean([s["dice_at_0.5"] for s in per_seed.values()]))}
    return out


def markdown(result: dict[str, Any]) -> str:
    seeds = result["seeds"]
    base = result["unadapted"]
    rows = [["unadapted", "", f"stored ({base['threshold']:.2f})", " / ".join([f"{base['dice']:.3f}"] * len(seeds)),
             f"**{base['dice']:.3f}**"],
            ["unadapted", "", "0.5", "", f"{base['dice_at_0.5']:.3f}"]]
    for arm, by_n in result["arms"].items():
        for n, entry in by_n.items():
            per = entry["seeds"].values()
            if arm != "scratch":  # scratch has no validation cases: its tuned threshold is 0.5
                rows.append([ARMS[arm], n, "tuned on source", " / ".join(f"{s['dice']:.3f}" for s in per),
                             f"{entry['mean_dice']:.3f}"])
            rows.append([ARMS[arm], n, "0.5", " / ".join(f"{s['dice_at_0.5']:.3f}" for s in per),
                         f"**{entry['mean_dice_at_0.5']:.3f}**"])
    table = markdown_table(["model", "labelled slices", "threshold", "seed " + " / ".join(map(str, seeds)), "mean"], rows)
    return (f"`{result['command']}`: source `{result['checkpoint']}`, {result['steps']} steps, test cases "
            f"{', '.join(base['cases'])} (Dice at 0.5: the test record's `dice_by_threshold`, before "
            f"post-processing)\n\n{table}\n")


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.replace(",", " ").split()]


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``labels`` or ``report``; returns the exit code (2 with one error line for refused input)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    labels = sub.add_parser("labels", help="write a labels folder of N drawn slices")
    labels.add_argument("--config", default=str(REPO / "configs" / "covid_ct.yaml"), help="where the data are")
    labels.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override, as train.py --set (e.g. data.root=...)")
    labels.add_argument("--pool", required=True, help="comma-separated case ids the slices are drawn from")
    labels.add_argument("--n", type=int, required=True, help="labelled slices")
    labels.add_argument("--seed", type=int, default=0)
    labels.add_argument("--out", required=True, help="the labels folder to create")
    report = sub.add_parser("report", help="the table of a finished curve")
    report.add_argument("--checkpoint", required=True, help="the source model (unadapted row)")
    report.add_argument("--runs", default="runs", help="the runs folder")
    report.add_argument("--sizes", default="5,10,20")
    report.add_argument("--seeds", default="0,1,2")
    report.add_argument("--steps", type=int, default=60)
    report.add_argument("--out", default=str(REPO / "bench" / "results" / "adapt_curve"),
                        help="output path without suffix (.json and .md are written)")
    args = parser.parse_args(argv)
    try:
        if args.command == "labels":
            if args.n < 1:
                parser.error("--n must be >= 1")
            data = load_config(args.config, args.set).data
            pool = [c.strip() for c in args.pool.split(",") if c.strip()]
            print(", ".join(write_labels(data, pool, args.n, args.seed, Path(args.out))))
            return 0
        sizes, seeds = _ints(args.sizes), _ints(args.seeds)
        arms = collect(Path(args.runs), sizes, seeds, args.steps)  # every run checked before the inference
        first = Path(next(iter(next(iter(arms.values())).values()))["seeds"][str(seeds[0])]["run"])
        base = unadapted(Path(args.checkpoint), first)
    except (CheckpointError, ConfigError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    command = command_line("adapt_curve.py", argv)
    result = {"command": command, "checkpoint": args.checkpoint, "steps": args.steps, "sizes": sizes, "seeds": seeds,
              "unadapted": base, "arms": arms, "versions": environment_versions()}
    write_result(Path(args.out), result, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
