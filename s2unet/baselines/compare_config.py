"""The comparison's config: the main config machinery (layered YAML + ``--set`` loading, ranges,
did-you-mean) with the sections of a comparison; each method's prompt keys belong to its
strategy (:mod:`s2unet.prompts.strategies`) and are checked by it.

A comparison YAML::

    name: covid_ct_compare
    output_dir: runs/compare_covid_ct      # default runs/<name>
    seed: 0
    data: {...}                            # the s2unet ``data:`` section (kind, root, labels,
                                           # window, split...); test cases = split "test",
                                           # else "val"
    max_cases: 4                           # 0 = all test cases
    max_slices_per_case: 24                # volumes: a contiguous block from the middle; 0 = all
    methods:
      - {name: s2unet, checkpoint: runs/covid_ct/best.pt}
      - {name: litemedsam-box, predictor: litemedsam, prompt: box_per_component, jitter: 0.0}
      - {name: litemedsam-draft, predictor: litemedsam, prompt: draft_boxes, draft: runs/covid_ct/best.pt}
      - {name: mobilesam-iter, predictor: mobilesam, prompt: iterative, rounds: 5}
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..config import (
    Config,
    ConfigError,
    DataConfig,
    check_device_name,
    check_ranges,
    check_registered,
    extra_keys,
    load_layered,
    ranged,
    read_values,
    validate,
)
from .sam_predictors import predictor_names
from ..prompts import PromptStrategy, create_strategy


@dataclass
class MethodConfig:
    """One compared method: a trained ``checkpoint``, or a zero-shot ``predictor`` + ``prompt``.

    Attributes:
        name: the name in the tables (unique).
        checkpoint: an s2unet/CNN model checkpoint (``best.pt``) trained by this project.
        predictor: a prompted predictor name (``litemedsam``, ``mobilesam``, ``sam2.1_hiera_tiny``...).
        weights: the predictor's checkpoint file instead of its default one.
        prompt: the prompt strategy (see :mod:`s2unet.prompts.strategies`).
        params: the strategy's own keys, written flat beside the others (``jitter``,
            ``rounds``, ``draft``, ``n_points``...).
    """

    name: str = ""
    checkpoint: Optional[str] = None
    predictor: Optional[str] = None
    weights: Optional[str] = None
    prompt: str = "box_per_component"
    params: dict[str, Any] = extra_keys()

    def strategy(self, where: str = "method") -> PromptStrategy:
        """The method's prompt strategy with its keys checked (prompted methods only).

        Raises:
            ConfigError: naming ``where`` and the key at fault.
        """
        return create_strategy(self.prompt, self.params, where)


@dataclass
class CompareConfig:
    """A comparison run (see the module docstring).

    Attributes:
        name: title and default output folder name.
        output_dir: where the outputs go (default ``runs/<name>``).
        seed: split seed (must equal the training runs' seed for a fair test set) and jitter seed.
        data: the data section, as in a training config.
        max_cases: test cases evaluated (the first ones by id); 0 = all.
        max_slices_per_case: volumes: slices per case, a contiguous block from the middle (so
            3D metrics keep their geometry); 0 = all.
        max_train_masks: ``points_fixed_mean``: training masks (images or slices) averaged.
        surface: also HD95 / NSD (slower).
        device: torch device.
        methods: the methods, in table order.
    """

    name: str = "compare"
    output_dir: str = ""
    seed: int = ranged("[0, inf)", 0)
    data: DataConfig = field(default_factory=DataConfig)
    max_cases: int = ranged("[0, inf)", 0)
    max_slices_per_case: int = ranged("[0, inf)", 0)
    max_train_masks: int = ranged("[1, inf)", 200)
    surface: bool = True
    device: str = "cpu"
    methods: list[MethodConfig] = field(default_factory=list)


def _check_method(i: int, m: MethodConfig, names: list[str]) -> None:
    where = f"methods[{i}] ({m.name or 'no name'})"
    if not m.name:
        raise ConfigError(f"{where}: every method needs a name")
    if names.count(m.name) > 1:
        raise ConfigError(f"{where}: the name {m.name!r} is used twice")
    if (m.checkpoint is None) == (m.predictor is None):
        raise ConfigError(f"{where}: give either checkpoint (a trained model) or predictor (zero-shot)")
    if m.predictor is None:
        if m.params:  # prompt keys on a trained model would be silently ignored
            raise ConfigError(f"{where}: unknown config key methods[{i}].{next(iter(m.params))} "
                              "(a trained checkpoint takes name and checkpoint)")
        return
    check_registered(m.predictor, predictor_names(), f"{where}: predictor", "prompted predictor")
    m.strategy(f"methods[{i}]")


def check_compare_config(cfg: CompareConfig) -> CompareConfig:
    """Ranges and cross-field checks; raise ConfigError naming the method and key."""
    check_ranges(cfg)
    validate(Config(data=cfg.data))
    check_device_name(cfg.device, "device")
    if cfg.data.task == "multiclass":
        raise ConfigError("compare: data.task multiclass is not supported (prompted models segment binary masks)")
    if not cfg.methods:
        raise ConfigError("compare: the config lists no methods")
    names = [m.name for m in cfg.methods]
    for i, m in enumerate(cfg.methods):
        _check_method(i, m, names)
    return cfg


def load_compare_config(path: str | Path, overrides: Optional[list[str]] = None) -> CompareConfig:
    """Read a comparison YAML, apply ``key=value`` overrides and validate.

    Args:
        path: the YAML file; ``name`` defaults to its stem.
        overrides: e.g. ``["max_cases=5", "data.root=../shared/data/cxr_jsrt_scr"]``.

    Returns:
        The validated CompareConfig.

    Raises:
        ConfigError: unreadable file, unknown keys, wrong types or inconsistent methods.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"comparison config {path} does not exist")
    values = read_values(path)
    values.setdefault("name", path.stem)
    return load_layered(CompareConfig, values, path, overrides, check_compare_config)
