"""What a run leaves behind besides checkpoints: resolved config, versions, split, metric logs, curve."""
from __future__ import annotations

import json
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from ..config import Config, DataConfig, save_config
from ..data import Case, DataError, find_cases
from ..io import atomic_path, write_json, write_text
from ..io.jsonio import dumps

_PACKAGES = ("s2unet", "torch", "torchvision", "sam2", "timm", "peft", "monai", "nibabel", "numpy", "scipy")


def environment_versions() -> dict[str, str]:
    """Versions of Python, the key packages and the hardware the run used."""
    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    out["cuda"] = torch.version.cuda or "none"
    out["device_count"] = str(torch.cuda.device_count())
    out["threads"] = str(torch.get_num_threads())
    return out


def write_run_records(run_dir: Path, cfg: Config, split: dict[str, list[str]], argv: list[str],
                      world_size: int = 1) -> None:
    """Write config.yaml, split.json and environment.json into the run directory."""
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    write_json(run_dir / "split.json", split)
    write_json(run_dir / "environment.json", {"seed": cfg.seed, "argv": argv, "world_size": world_size,
                                              "versions": environment_versions()})


def run_split_cases(run_dir: Path, data: DataConfig, split: str) -> list[Case]:
    """The cases of one split of a run, in the order its ``split.json`` lists them.

    Args:
        run_dir: the run directory (the folder of its ``best.pt``).
        data: the run's data config (where the cases are found).
        split: ``train``, ``val`` or ``test``.

    Returns:
        The cases (empty when the run has none in that split).

    Raises:
        DataError: no readable ``split.json``, a split it does not have, or listed cases no
            longer under the data folders (named, with where they were looked for).
    """
    path = Path(run_dir) / "split.json"
    try:
        splits = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read the run's split ({type(exc).__name__}: {exc})") from exc
    if split not in splits:
        raise DataError(f"{path} has no split {split!r}; it has {', '.join(sorted(splits))}")
    by_id = {c.case_id: c for c in find_cases(data)}
    missing = [i for i in splits[split] if i not in by_id]
    if missing:
        raise DataError(f"{len(missing)} {split} case(s) of {path} are not in the data folders of its config "
                        f"(root {data.root}): {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
    return [by_id[i] for i in splits[split]]


class MetricLog:
    """Appends one JSON line per event to ``metrics.jsonl`` and redraws ``learning_curve.png``."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / "metrics.jsonl"
        self.curve = run_dir / "learning_curve.png"

    def append(self, record: dict[str, Any]) -> None:
        with self.path.open("a") as f:
            f.write(dumps(record, self.path) + "\n")

    def records(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

    def truncate_after(self, step: int) -> None:
        """Drop records past ``step`` (a resumed run rewrites what the interrupted one logged)."""
        kept = [r for r in self.records() if r.get("step", 0) <= step]
        write_text(self.path, "".join(dumps(r, self.path) + "\n" for r in kept))

    def plot(self, metric: str) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        recs = self.records()
        train = [(r["step"], r["loss"]) for r in recs if r.get("kind") == "train"]
        val = [(r["step"], r[metric]) for r in recs if r.get("kind") == "val" and metric in r]
        fig, ax = plt.subplots(figsize=(7, 4))
        if train:
            ax.plot(*zip(*train), label="train loss", color="tab:blue", lw=1)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        if val:
            ax2 = ax.twinx()
            ax2.plot(*zip(*val), "o-", label=f"val {metric}", color="tab:red")
            ax2.set_ylabel(f"validation {metric}")
            ax2.set_ylim(0, 1)
        fig.legend(loc="upper center", ncol=2, frameon=False)
        fig.tight_layout(rect=(0, 0, 1, 0.92))  # room for the legend above the axes
        with atomic_path(self.curve) as tmp:
            fig.savefig(tmp, dpi=100)
        plt.close(fig)
