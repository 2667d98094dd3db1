"""Comparison outputs: the method table (Markdown and CSV), per-case Dice box plot and the
interactive-correction curve. Every file is written atomically.

Oracle marking: a method whose prompts come from the test image's own ground truth (boxes or
clicks around the reference) is an upper bound no deployed system reaches; the table marks it
with :data:`ORACLE_MARK` and a ``GT prompts`` column, the plots label and colour it apart.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from ..inference.outputs import write_csv
from ..io import all_or_none, atomic_path, write_json, write_text

ORACLE_MARK = "†"
ORACLE_LEGEND = (
    f"{ORACLE_MARK} oracle: the prompts are derived from the test image's own ground truth (boxes or "
    "clicks around the reference mask), an upper bound that no deployed system reaches; compare them "
    "with each other, not with the fully automatic methods."
)
TABLE_METRICS = ("dice", "iou", "sensitivity", "specificity", "hd95")
DICE_TARGET = 0.9
# Clicks within which an interactive method should reach the target (the published studies'
# budget: a first click and up to ten corrections).
CLICK_BUDGET = 11


@dataclass
class MethodResult:
    """The outcome of one compared method.

    Attributes:
        name: the method's name in the comparison config.
        kind: ``trained`` (s2unet / CNN checkpoint), ``fine-tuned`` (a prompted SAM-family model
            trained by this project) or ``zero-shot`` (prompted SAM-family model).
        uses_ground_truth: prompts derived from the test ground truth (oracle).
        status: ``ok``, ``skipped`` (could not start, e.g. a missing checkpoint) or ``failed``
            (raised while running).
        reason: why it was skipped or failed.
        description: what ran (predictor, strategy, checkpoint).
        summary: :func:`s2unet.metrics.summarize` of its case (and slice) rows.
        seconds_per_image: wall time per image or slice, encoder included.
        trainable_parameters: parameters trained for the task (0 for zero-shot models).
    """

    name: str
    kind: str
    uses_ground_truth: bool
    status: str = "ok"
    reason: str = ""
    description: str = ""
    summary: dict[str, Any] = field(default_factory=dict)
    seconds_per_image: float = math.nan
    trainable_parameters: int = 0

    @property
    def label(self) -> str:
        """The name, with the oracle mark when the prompts use the ground truth."""
        return f"{self.name} {ORACLE_MARK}" if self.uses_ground_truth else self.name


def _save_figure(fig: Any, ax: Any, path: Path, title: str | None) -> None:
    """Title, tighten, write atomically as PNG, and free the figure."""
    import matplotlib.pyplot as plt

    if title:
        ax.set_title(title)
    fig.tight_layout()
    with atomic_path(Path(path)) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def _yes_no(flag: bool) -> str:
    return "yes" if flag else "no"


def comparison_rows(results: Sequence[MethodResult]) -> list[dict[str, Any]]:
    """One flat row per method for ``comparison.csv``.

    Columns: method, kind, prompts_from_ground_truth (yes/no), status, reason, description,
    n_cases, the case means (``dice``, ``dice_std``, ``iou``, ``sensitivity``, ``specificity``,
    ``hd95``, ``nsd`` and per-label keys), for volumes ``n_slices``, ``dice_slice_mean`` and
    ``dice_slice_mean_with_gt``, then ``seconds_per_image`` and ``trainable_parameters``.
    """
    rows = []
    for r in results:
        row: dict[str, Any] = {
            "method": r.name, "kind": r.kind, "prompts_from_ground_truth": _yes_no(r.uses_ground_truth),
            "status": r.status, "reason": r.reason, "description": r.description,
        }
        s = r.summary
        if s:
            row["n_cases"] = s.get("n_cases", 0)
            for key, value in s.get("case_mean", {}).items():
                row[key] = value
                if key == "dice":
                    row["dice_std"] = s["case_std"][key]
            if "slice_mean" in s:
                row["n_slices"] = s["n_slices"]
                row["dice_slice_mean"] = s["slice_mean"].get("dice")
                row["dice_slice_mean_with_gt"] = s.get("slice_mean_with_gt", {}).get("dice")
        row["seconds_per_image"] = r.seconds_per_image
        row["trainable_parameters"] = r.trainable_parameters
        rows.append(row)
    return rows


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def markdown_table(results: Sequence[MethodResult], volumes: bool) -> str:
    """The Markdown comparison: a table of the methods that ran, a list of those that did not,
    and the oracle legend.

    Args:
        results: every method, in config order.
        volumes: add the per-slice Dice columns (CT volumes).

    Returns:
        Markdown text.
    """
    head = ["method", "GT prompts", "Dice (case mean ± sd)"]
    if volumes:
        head += ["Dice (slice mean)", "Dice (slices with GT)"]
    unit = "slice" if volumes else "image"
    head += ["IoU", "sensitivity", "specificity", "HD95", f"s / {unit}", "trainable params"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        if r.status != "ok":
            continue
        mean, std = r.summary.get("case_mean", {}), r.summary.get("case_std", {})
        cells = [r.label, _yes_no(r.uses_ground_truth), f"{_fmt(mean.get('dice'))} ± {_fmt(std.get('dice'))}"]
        if volumes:
            cells += [_fmt(r.summary.get("slice_mean", {}).get("dice")),
                      _fmt(r.summary.get("slice_mean_with_gt", {}).get("dice"))]
        cells += [_fmt(mean.get(k)) for k in TABLE_METRICS[1:4]]
        cells += [_fmt(mean.get("hd95"), 1), _fmt(r.seconds_per_image, 2), f"{r.trainable_parameters:,}"]
        lines.append("| " + " | ".join(cells) + " |")
    not_run = [r for r in results if r.status != "ok"]
    if not_run:
        lines += ["", "Not run:", ""]
        lines += [f"- **{r.name}** ({r.status}): {r.reason}" for r in not_run]
    lines += ["", ORACLE_LEGEND]
    return "\n".join(lines) + "\n"


def dice_boxplot(
    path: Path, per_case_dice: dict[str, Sequence[float]], oracle: dict[str, bool], title: str = ""
) -> None:
    """Box plot of per-case Dice, one box per method; oracle methods in orange and marked.

    Args:
        path: output ``.png``.
        per_case_dice: method -> Dice of each case.
        oracle: method -> prompts from the ground truth.
        title: figure title.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    names = [n for n, v in per_case_dice.items() if len(v)]
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(names) + 2.0), 4.5))
    if names:
        box = ax.boxplot([per_case_dice[n] for n in names], patch_artist=True, showmeans=True)
        for patch, name in zip(box["boxes"], names):
            patch.set_facecolor("#f5a742" if oracle.get(name) else "#6fa8dc")
        for i, name in enumerate(names, start=1):
            ax.scatter(np.full(len(per_case_dice[name]), i), per_case_dice[name], s=10, color="black", zorder=3)
        ax.set_xticks(range(1, len(names) + 1))
        ax.set_xticklabels([f"{n} {ORACLE_MARK}" if oracle.get(n) else n for n in names], rotation=30, ha="right")
    ax.set_ylabel("Dice per case")
    ax.set_ylim(0.0, 1.02)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(handles=[Patch(color="#6fa8dc", label="automatic / trained"),
                       Patch(color="#f5a742", label=f"{ORACLE_MARK} oracle (GT-derived prompts)")],
              loc="lower left", fontsize=8)
    _save_figure(fig, ax, path, title)


def iterative_summary(round_dice: Sequence[Sequence[float]], target: float = DICE_TARGET) -> dict[str, Any]:
    """Aggregate interactive-correction runs (one Dice list per image, click 1, 2, ...).

    Args:
        round_dice: per image with a target, the Dice after each click (equal lengths).
        target: the Dice to reach.

    Returns:
        ``clicks`` (1..R), ``mean_dice`` per click, ``share_reaching_target`` per click,
        ``mean_clicks_to_target`` (NoC: images that never reach it count as R clicks, the
        usual cap), ``never_reached`` (their share), ``budget_clicks`` (:data:`CLICK_BUDGET`,
        or R when fewer clicks ran) with ``share_within_budget`` (the share reaching the target
        within that many clicks) and ``n_images``.
    """
    arr = np.asarray(round_dice, dtype=np.float64)
    if arr.size == 0:
        return {"clicks": [], "mean_dice": [], "share_reaching_target": [], "mean_clicks_to_target": None,
                "never_reached": None, "budget_clicks": 0, "share_within_budget": None, "n_images": 0,
                "target": target}
    reached = arr >= target
    clicks_needed = np.where(reached.any(axis=1), reached.argmax(axis=1) + 1, arr.shape[1])
    budget = min(CLICK_BUDGET, arr.shape[1])
    return {
        "clicks": list(range(1, arr.shape[1] + 1)),
        "mean_dice": arr.mean(axis=0).tolist(),
        "share_reaching_target": np.maximum.accumulate(reached, axis=1).mean(axis=0).tolist(),
        "mean_clicks_to_target": float(clicks_needed.mean()),
        "never_reached": float((~reached.any(axis=1)).mean()),
        "budget_clicks": budget,
        "share_within_budget": float(reached[:, :budget].any(axis=1).mean()),
        "n_images": int(arr.shape[0]),
        "target": target,
    }


def click_table(curves: dict[str, dict[str, Any]]) -> str:
    """The click curves as Markdown: clicks to reach the target Dice, the share reaching it
    within :data:`CLICK_BUDGET` clicks, and the mean Dice after each click.

    Args:
        curves: method -> :func:`iterative_summary`.

    Returns:
        A heading and a table (one row per method with clicks).
    """
    rows = [(name, c) for name, c in curves.items() if c["clicks"]]
    if not rows:
        return ""
    target = rows[0][1]["target"]
    lines = ["## Click curves", "",
             f"Mean clicks to reach Dice {target:.2f} (an image that never reaches it counts as all its clicks), "
             f"the share of images reaching it within {CLICK_BUDGET} clicks (within all clicks when fewer ran), "
             "and the mean Dice after each click.", "",
             f"| method | images | clicks | mean clicks to {target:.2f} | reaching {target:.2f} | Dice per click |",
             "|---|---|---|---|---|---|"]
    for name, c in rows:
        budget = c["budget_clicks"]
        within = f"{c['share_within_budget']:.0%}" + ("" if budget == CLICK_BUDGET else f" (within {budget})")
        per_click = " / ".join(f"{d:.3f}" for d in c["mean_dice"])
        lines.append(f"| {name} {ORACLE_MARK} | {c['n_images']} | {len(c['clicks'])} | "
                     f"{c['mean_clicks_to_target']:.1f} | {within} | {per_click} |")
    return "\n".join(lines) + "\n"


def iterative_plot(path: Path, curves: dict[str, dict[str, Any]], title: str = "") -> None:
    """Mean Dice against clicks, one line per iterative method, the target as a dashed line.

    Args:
        path: output ``.png``.
        curves: method -> :func:`iterative_summary`.
        title: figure title.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4.0))
    for name, curve in curves.items():
        if curve["clicks"]:
            noc = curve["mean_clicks_to_target"]
            ax.plot(curve["clicks"], curve["mean_dice"], marker="o",
                    label=f"{name} {ORACLE_MARK} (NoC@{curve['target']:.0%} {noc:.1f})")
    ax.axhline(DICE_TARGET, color="gray", linestyle="--", linewidth=1)
    ax.set_xlabel("clicks (1 = first interior point, then corrections)")
    ax.set_ylabel("mean Dice (images / slices with a target)")
    ax.set_ylim(0.0, 1.0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    _save_figure(fig, ax, path, title)


def write_comparison(
    output_dir: Path,
    results: Sequence[MethodResult],
    per_case_rows: Sequence[dict[str, Any]],
    volumes: bool,
    curves: Optional[dict[str, dict[str, Any]]] = None,
    title: str = "",
    notes: Sequence[str] = (),
) -> list[Path]:
    """Write every comparison output.

    Args:
        output_dir: the folder.
        results: every method (skipped ones included).
        per_case_rows: metric rows with a ``method`` key.
        volumes: CT volumes (adds per-slice Dice columns).
        curves: iterative methods' :func:`iterative_summary`, if any ran.
        title: the comparison's title.
        notes: extra lines for the Markdown (data, split, warnings).

    Returns:
        The files written.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    md = [f"# {title or 'Comparison'}", "", *notes, "" if notes else "", markdown_table(results, volumes)]
    if curves:
        md += ["", click_table(curves)]
    files = [output_dir / "comparison.md", output_dir / "comparison.csv", output_dir / "per_case.csv",
             output_dir / "dice_boxplot.png"]
    if curves:
        files += [output_dir / "iterative_curve.json", output_dir / "iterative_curve.png"]
    per_case: dict[str, list[float]] = {}
    for row in per_case_rows:
        per_case.setdefault(row["method"], []).append(float(row["dice"]))
    with all_or_none(files):  # a full disk half-way leaves no mixed set of old and new files
        write_text(files[0], "\n".join(md))
        write_csv(files[1], comparison_rows(results))
        write_csv(files[2], list(per_case_rows) or [{"method": "", "case": ""}])
        dice_boxplot(files[3], per_case, {r.name: r.uses_ground_truth for r in results}, title)
        if curves:
            write_json(files[4], curves)
            iterative_plot(files[5], curves, title)
    return files
