"""Run configuration: typed dataclasses, YAML files and ``--set key.sub=value`` overrides.

Precedence is defaults < YAML < ``--set``. Every key is checked against the dataclasses before
anything heavy starts: an unknown key names the closest valid one, a wrong type names the key,
the expected type and the value found, a number outside the range declared beside its key
(:func:`ranged`) names the key and the range. Each error says which layer brought it in: the
YAML file or the ``--set`` override.

* :mod:`.architectures` — what config checks of each ``model.arch`` (:func:`arch_traits`);
* :mod:`.ranges` — :class:`ConfigError`, :func:`ranged` and the range checks, :func:`extra_keys`;
* :mod:`.schema` — the sections (:class:`Config`, :class:`DataConfig`, ...);
* :mod:`.text` — the ``text`` section of text-prompted models;
* :mod:`.validation` — cross-field rules (:func:`validate`);
* :mod:`.loading` — files, overrides and layered loading (:func:`load_config`).
"""
from .architectures import ARCH_TRAITS, PROMPTED_ENCODERS, ArchTraits, arch_traits, declare_arch_traits
from .loading import (
    build_checked,
    build_params,
    check_registered,
    config_from_dict,
    load_config,
    load_layered,
    parse_override,
    read_values,
    save_config,
)
from .ranges import ConfigError, Interval, as_values, check_range, check_ranges, extra_field, extra_keys, ranged
from .schema import (
    WINDOW_PRESETS,
    AdapterConfig,
    AttentionLoraConfig,
    AugmentConfig,
    Config,
    DataConfig,
    LossConfig,
    ModelConfig,
    PostprocessConfig,
    PromptedConfig,
    SplitConfig,
    TrainConfig,
    WindowConfig,
)
from .text import TextConfig, TextStructureConfig, phrase_key, phrase_side, side_free, text_structures
from .validation import check_device_name, validate

__all__ = [
    "ARCH_TRAITS", "PROMPTED_ENCODERS", "ArchTraits", "arch_traits", "declare_arch_traits",
    "WINDOW_PRESETS", "AdapterConfig", "AttentionLoraConfig", "AugmentConfig", "Config", "ConfigError",
    "DataConfig", "Interval", "LossConfig", "ModelConfig", "PostprocessConfig", "PromptedConfig", "SplitConfig", "TrainConfig",
    "WindowConfig", "as_values", "build_checked", "build_params", "check_registered", "check_device_name", "check_range", "check_ranges",
    "config_from_dict", "extra_field", "extra_keys", "load_config", "load_layered", "parse_override", "ranged",
    "read_values", "save_config", "validate", "TextConfig", "TextStructureConfig", "phrase_key", "phrase_side", "side_free", "text_structures",
]
