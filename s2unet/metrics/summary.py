"""Aggregating rows: case and slice means, the means over rows with a reference (per label), and
the printed summary that names empty references (rules in :mod:`s2unet.metrics`)."""
from __future__ import annotations

from typing import Any, Iterable, Sequence

import numpy as np

from .scores import METRICS


def metric_keys(rows: Iterable[dict[str, Any]]) -> list[str]:
    """The metric columns present in rows (``dice``, ``dice/lungs``...), in first-seen order."""
    keys: dict[str, None] = {}
    for row in rows:
        keys.update({k: None for k in row if k.split("/")[0] in METRICS})
    return list(keys)


def _means(rows: list[dict[str, Any]], keys: list[str]) -> dict[str, float]:
    return {k: float(np.mean([r[k] for r in rows if k in r])) for k in keys}


def _reference_labels(rows: Iterable[dict[str, Any]]) -> list[str]:
    """The labels of multilabel rows (their ``gt_voxels/<label>`` keys); empty for binary rows."""
    names: dict[str, None] = {}
    for row in rows:
        names.update({k.split("/", 1)[1]: None for k in row if k.startswith("gt_voxels/")})
    return list(names)


def _has_reference(row: dict[str, Any], label: str | None) -> bool:
    return row.get("gt_voxels" if label is None else f"gt_voxels/{label}", 0) > 0


def _with_gt(rows: list[dict[str, Any]], keys: list[str]) -> tuple[int, dict[str, float], dict[str, int]]:
    """The "with GT" view of rows, by the per-label rule of the module docstring.

    Returns:
        ``(rows where every label has a reference, means with GT, {label: rows where it is
        empty})``; the last is empty for binary rows.
    """
    labels = _reference_labels(rows)
    if not labels:
        kept = [r for r in rows if _has_reference(r, None)]
        return len(kept), _means(kept, keys) if kept else {}, {}
    label_means: dict[str, float] = {}
    for key in (k for k in keys if "/" in k):
        values = [r[key] for r in rows if key in r and _has_reference(r, key.split("/", 1)[1])]
        if values:
            label_means[key] = float(np.mean(values))
    means: dict[str, float] = {}
    for key in keys:
        # A label key keeps its own mean; a plain key is the mean over labels, in each row and here.
        values = [v for k, v in label_means.items() if k == key or k.split("/", 1)[0] == key]
        if values:
            means[key] = float(np.mean(values))
    n_complete = sum(all(_has_reference(r, name) for name in labels) for r in rows)
    empty = {name: sum(not _has_reference(r, name) for r in rows) for name in labels}
    return n_complete, means, empty


def summarize(per_case_rows: Sequence[dict[str, Any]], per_slice_rows: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """Aggregate rows: mean and standard deviation over cases, mean over slices.

    Both views are reported because the literature uses both: most volumetric work averages
    per case, while COVID-SemiSeg / Inf-Net average over slices (their test sets keep only slices
    with infection, so ``slice_mean_with_gt`` is the comparable number for full volumes).
    The standard deviation is the population one (ddof 0), defined for a single case too.

    Args:
        per_case_rows: rows from ``case_metrics``/``metric_row`` (with ``case``).
        per_slice_rows: slice rows from ``case_metrics``; may be empty (2D images).

    Returns:
        ``{"n_cases", "case_mean", "case_std", "n_cases_with_gt", "case_mean_with_gt"}`` plus,
        when slice rows are given, ``{"n_slices", "slice_mean", "n_slices_with_gt",
        "slice_mean_with_gt"}``; each ``*_mean`` and ``*_std`` maps metric key to float. The
        ``*_with_gt`` means leave out rows whose reference is empty (``gt_voxels`` 0), which
        score by the empty rules of this module, per label when there are several (module
        docstring); they are empty dicts when no row has any. Multilabel rows add
        ``n_cases_empty_by_label`` (and ``n_slices_empty_by_label``): label to the number of
        rows where its reference is empty.
    """
    cases = list(per_case_rows)
    keys = metric_keys(cases)
    n_with_gt, means_with_gt, empty = _with_gt(cases, keys)
    out: dict[str, Any] = {
        "n_cases": len(cases),
        "case_mean": _means(cases, keys) if cases else {},
        "case_std": {k: float(np.std([r[k] for r in cases if k in r])) for k in keys} if cases else {},
        "n_cases_with_gt": n_with_gt,
        "case_mean_with_gt": means_with_gt,
    }
    if empty:
        out["n_cases_empty_by_label"] = empty
    slices = list(per_slice_rows)
    if slices:
        skeys = metric_keys(slices)
        n_with_gt, means_with_gt, empty = _with_gt(slices, skeys)
        out.update(n_slices=len(slices), slice_mean=_means(slices, skeys), n_slices_with_gt=n_with_gt,
                   slice_mean_with_gt=means_with_gt)
        if empty:
            out["n_slices_empty_by_label"] = empty
    return out


def describe_empty_references(empty_by_label: dict[str, int], n_cases: int) -> str:
    """Which labels have an empty reference in how many cases, for one warning line.

    Args:
        empty_by_label: label to the number of cases where its reference is empty.
        n_cases: the number of cases.

    Returns:
        E.g. ``"heart in 2 of 10 cases, left_clavicle in 1 of 10"`` (labels never empty omitted).
    """
    parts = [f"{name} in {n} of {n_cases}" for name, n in empty_by_label.items() if n]
    if parts:
        parts[0] += " cases"
    return ", ".join(parts)


def format_summary(summary: dict[str, Any]) -> str:
    """One line per metric: case mean ± std, then the slice means when present.

    When some cases have an empty reference, a first line says how many (per label when there
    are several) and how they score, and each metric line adds the mean over the cases with
    foreground.

    Args:
        summary: from :func:`summarize`.

    Returns:
        The text, one line per metric key.
    """
    lines = []
    n_cases, n_with_gt = summary.get("n_cases", 0), summary.get("n_cases_with_gt", summary.get("n_cases", 0))
    if n_with_gt < n_cases:
        scoring = "(Dice 1 if nothing is predicted there, else 0); 'cases with GT' leaves them out"
        if "n_cases_empty_by_label" in summary:
            lines.append(f"empty references: {describe_empty_references(summary['n_cases_empty_by_label'], n_cases)} "
                         f"{scoring} per label")
        else:
            lines.append(f"{n_cases - n_with_gt} of {n_cases} cases have an empty reference {scoring}")
    for key, mean in summary.get("case_mean", {}).items():
        line = f"{key:<20} {mean:9.4f} ± {summary['case_std'][key]:.4f}"
        if n_with_gt < n_cases:
            line += f" | cases with GT {summary['case_mean_with_gt'].get(key, float('nan')):.4f}"
        if key in summary.get("slice_mean", {}):
            line += f" | slices {summary['slice_mean'][key]:.4f}"
        if key in summary.get("slice_mean_with_gt", {}):
            line += f" | slices with GT {summary['slice_mean_with_gt'][key]:.4f}"
        lines.append(line)
    return "\n".join(lines)
