"""``python -m s2unet compare``: s2unet, CNN baselines and prompted SAM-family models on the
same test cases, scored by the one metric implementation (:mod:`s2unet.metrics`).

The config (:mod:`.compare_config`) is loaded by the main config machinery. Trained checkpoints
run through :class:`s2unet.inference.Predictor` with their own preprocessing (window, 2.5D
context, image size) and tuned threshold. Prompted models see each image (or CT slice, shown
the usual way up: the served slice transposed) at its native resolution, prompted per label
channel by their strategy (:mod:`s2unet.prompts.strategies`). A method that cannot start (missing
checkpoint, labels that do not match) is reported as skipped with the reason; one that raises
while running as failed; the others still run (:mod:`.compare_methods`).
"""
from __future__ import annotations

import traceback
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from ..config import Config, ConfigError
from ..data import Case, DataError, find_cases, read_labelled_slices, split_cases
from ..metrics import case_metrics, summarize
from ..predict import channel_names
from .compare_config import CompareConfig, load_compare_config
from .compare_data import EvalCase, load_eval_case, slice_stacks
from .compare_methods import MethodBuilder, MethodRun, TrainedModels, console
from .report import iterative_summary, write_comparison

__all__ = ["comparison_cases", "load_compare_config", "run_compare"]


def _score(run: MethodRun, ev: EvalCase, pred: np.ndarray, labels: list[str], surface: bool) -> None:
    """Add a case's metric rows to a method."""
    cid = ev.case.case_id
    if ev.is_volume:
        row, rows = case_metrics(pred, ev.gt, cid, labels, ev.spacing, slice_axis=0, surface=surface)
        for r in rows:
            r["slice"] = ev.planes[r["slice"]]  # stack position -> slice index in the volume
    else:
        row, rows = case_metrics(pred[:, 0], ev.gt[:, 0], cid, labels, surface=surface)
    run.case_rows.append(row)
    run.slice_rows.extend(rows)


def _guarded(run: MethodRun, case_id: str, step: Callable[[MethodRun], Any]) -> Any:
    """Run one step of a method; a method that raises is marked failed and stops, the others go on."""
    if run.method is None:
        return None
    try:
        return step(run)
    except Exception as exc:  # one broken method must not stop the comparison
        run.result.status, run.result.reason = "failed", f"{type(exc).__name__} on {case_id}: {exc}"
        run.method = None
        console.print(f"[red]failed[/] {run.cfg.name} on {case_id}:\n{traceback.format_exc()}")
        return None


def comparison_cases(cfg: CompareConfig) -> tuple[list[Case], list[Case]]:
    """The comparison's test cases (split ``test``, else ``val``) and training cases."""
    cases = find_cases(cfg.data)
    ids = [c.case_id for c in cases]
    labelled = read_labelled_slices(cfg.data, ids)
    if labelled is not None:
        raise DataError(f"{labelled.path}: cases {sorted(labelled.cases)} are labelled on some slices only; compare "
                        "scores and prompts from whole slices of every volume. Compare on wholly labelled cases, or "
                        "set data.labelled_slices: '' if the listed volumes are in fact labelled whole")
    split = split_cases(ids, cfg.data.split, cfg.seed)
    test_ids = split["test"] or split["val"]
    if cfg.max_cases:
        test_ids = test_ids[: cfg.max_cases]
    by_id = {c.case_id: c for c in cases}
    return [by_id[i] for i in test_ids], [by_id[i] for i in split["train"]]


def run_compare(config_path: str | Path, output_dir: Optional[str | Path] = None,
                overrides: Optional[list[str]] = None) -> Path:
    """Run every method of a comparison config on the same test cases and write the outputs.

    Args:
        config_path: the comparison YAML.
        output_dir: where to write (default: the config's ``output_dir``, else ``runs/<name>``).
        overrides: ``key=value`` strings applied to the YAML (e.g. ``max_cases=5``).

    Returns:
        The output folder, holding ``comparison.md``, ``comparison.csv``, ``per_case.csv``,
        ``dice_boxplot.png`` and, when an iterative method ran, ``iterative_curve.json`` /
        ``iterative_curve.png``.

    Raises:
        ConfigError: a wrong config. DataError: unreadable data. Methods that cannot start
        are reported as skipped instead of raising.
    """
    cfg = load_compare_config(config_path, overrides)
    out = Path(output_dir or cfg.output_dir or Path("runs") / cfg.name)
    cases, train_cases = comparison_cases(cfg)
    if not cases:
        raise ConfigError(f"{config_path}: the split has no test or validation cases to compare on")
    labels = channel_names(Config(data=cfg.data))
    volumes = slice_stacks(cases)
    models = TrainedModels(cfg.data, cases, cfg.device, volumes)
    setup = MethodBuilder(cfg, train_cases, models)
    runs = [setup.build(i, m) for i, m in enumerate(cfg.methods)]
    console.print(f"[bold]{cfg.name}[/]: {len(cases)} test cases, {sum(r.method is not None for r in runs)} "
                  f"of {len(runs)} methods runnable -> {out}")

    for ci, case in enumerate(cases, start=1):
        ev = load_eval_case(case, cfg.data, cfg.max_slices_per_case)
        for run in runs:
            _guarded(run, case.case_id, lambda r: r.method.start(ev))
        for s in range(len(ev.planes)):
            for run in runs:
                _guarded(run, case.case_id, lambda r: r.method.plane(s))
        for run in runs:
            pred = _guarded(run, case.case_id, lambda r: r.method.finish())
            if pred is None:
                continue
            run.n_images += len(ev.planes)
            _score(run, ev, pred, labels, cfg.surface)
            console.print(f"[{ci}/{len(cases)}] {case.case_id} {run.cfg.name}: Dice {run.case_rows[-1]['dice']:.3f}")

    per_case: list[dict[str, Any]] = []
    curves: dict[str, dict[str, Any]] = {}
    for run in runs:
        if run.result.status == "ok" and run.case_rows:
            run.result.summary = summarize(run.case_rows, run.slice_rows)
            run.result.seconds_per_image = run.seconds / max(1, run.n_images)
            per_case += [{"method": run.cfg.name, **row} for row in run.case_rows]
            if run.strategy is not None and run.strategy.corrects:
                curves[run.cfg.name] = iterative_summary(run.round_dice)
    notes = [
        f"Data: {cfg.data.root} ({cfg.data.kind}, labels {', '.join(labels)}); {len(cases)} test cases "
        f"({', '.join(c.case_id for c in cases)})"
        + (f", at most {cfg.max_slices_per_case} middle slices each" if volumes and cfg.max_slices_per_case else "")
        + f"; split seed {cfg.seed}.",
        "Metrics: s2unet.metrics (HD95 in spacing units; empty-mask rules as documented there); "
        "Dice case mean ± population sd.",
        *models.notes,
    ]
    files = write_comparison(out, [r.result for r in runs], per_case, volumes, curves, cfg.name, notes)
    console.print(f"wrote {', '.join(f.name for f in files)} to {out}")
    return out
