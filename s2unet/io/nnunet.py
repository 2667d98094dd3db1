"""The ``dataset.json`` of an nnU-Net v2 dataset folder (``imagesTr/``, ``labelsTr/``,
``imagesTs/``), read for its labels and file ending."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .errors import DataError


@dataclass(frozen=True)
class NnunetDataset:
    """What s2unet takes from a ``dataset.json``.

    Attributes:
        labels: label names in value order (``labels[0]`` is the background, value 0).
        file_ending: the files' suffix, e.g. ``.nii.gz`` or ``.png``.
    """

    labels: list[str]
    file_ending: str


def read_dataset_json(path: Path) -> NnunetDataset:
    """Read and check a ``dataset.json``.

    Args:
        path: the file.

    Returns:
        Its labels and file ending.

    Raises:
        DataError: unreadable JSON, no ``labels`` mapping, region labels (value lists), values
            that are not 0..K-1 with 0 the background, more than one channel.
    """
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable JSON file ({exc})") from None
    labels = data.get("labels") if isinstance(data, dict) else None
    if not isinstance(labels, dict) or not labels:
        raise DataError(f"{path}: no \"labels\" mapping (name -> value), as nnU-Net v2 writes it")
    regions = [name for name, value in labels.items() if not isinstance(value, int) or isinstance(value, bool)]
    if regions:
        raise DataError(f"{path}: labels {regions} are regions (lists of values); s2unet reads one value per label")
    by_value = sorted(labels.items(), key=lambda item: item[1])
    values = [value for _, value in by_value]
    if values != list(range(len(values))):
        raise DataError(f"{path}: label values {values} are not 0..{len(values) - 1} (0 the background)")
    channels = data.get("channel_names", {"0": ""})
    if isinstance(channels, dict) and len(channels) > 1:
        raise DataError(f"{path}: {len(channels)} channels ({', '.join(map(str, channels.values()))}); "
                        "s2unet reads one channel per case")
    return NnunetDataset([name for name, _ in by_value], str(data.get("file_ending", ".nii.gz")))
