"""The labeling app's draft model: a trained s2unet checkpoint that drafts every layer of a case
(and, when text-prompted, answers a phrase with one mask) in the app's display frame."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..weights import CheckpointError
from .workspace import AppError, Layer, OpenCase

if TYPE_CHECKING:
    from ..predict import Predictor


class DraftModel:
    """An s2unet checkpoint that drafts masks for the app's layers (a text-prompted one also
    answers a phrase with one mask).

    Args:
        path: the checkpoint (``best.pt``).
        layers: the app's layers; the checkpoint must predict exactly these labels.

    Raises:
        AppError: unreadable checkpoint, or one of another task (other labels).
    """

    def __init__(self, path: Path, layers: list[Layer]) -> None:
        from ..models.checkpoint import load_model_checkpoint
        from ..predict import Predictor, foreground_names

        try:
            loaded = load_model_checkpoint(path)
        except CheckpointError as exc:
            raise AppError(f"checkpoint {path} cannot be used: {exc}") from None
        theirs = foreground_names(loaded.config)
        ours = [layer.name for layer in layers]
        if theirs != ours:
            raise AppError(f"checkpoint {path} predicts {theirs}, but the app labels {ours}: it was trained for "
                           "another task (start the app with --labels matching it, or another --checkpoint)")
        loaded.model.merge_lora()
        self.path = path
        self.kind = loaded.config.data.kind
        self.loaded = loaded
        self.predictor = Predictor(loaded.model, loaded.config, "cpu", loaded.threshold, text=loaded.structure_text,
                                   calibration=loaded.calibration)

    @property
    def takes_text(self) -> bool:
        """True for a text-prompted checkpoint (:meth:`ask` answers phrases)."""
        return self.loaded.text is not None

    def draft(self, opened: OpenCase) -> np.ndarray:
        """(C, S, H, W) bool draft of a whole case in the display frame.

        Raises:
            AppError: the checkpoint was trained on the other kind of data.
        """
        return self._predict(self.predictor, opened)

    def ask(self, opened: OpenCase, phrase: str) -> tuple[np.ndarray, str]:
        """The mask a text-prompted checkpoint gives for a phrase.

        Args:
            opened: the case.
            phrase: what to segment, e.g. "left clavicle".

        Returns:
            ``((S, H, W) bool mask in the display frame, the structure the phrase was taken as)``.

        Raises:
            AppError: not a text-prompted checkpoint, or the phrase is refused (the message
                lists the structures the model knows).
        """
        from ..predict import Predictor
        from ..text import UnknownPhraseError, query_config

        if self.loaded.text is None:
            raise AppError(f"checkpoint {self.path} is not text-prompted: it answers no phrases (use Draft)")
        try:
            asked = self.loaded.text.resolve([phrase])
        except (UnknownPhraseError, CheckpointError) as exc:
            raise AppError(str(exc)) from None
        cfg = query_config(self.loaded.config, ["phrase"], asked.channels)
        predictor = Predictor(self.loaded.model, cfg, "cpu", self.loaded.threshold, text=asked.embeddings,
                              calibration=self.loaded.calibration)
        return self._predict(predictor, opened)[0], asked.nearest[0]

    def _predict(self, predictor: "Predictor", opened: OpenCase) -> np.ndarray:
        """(C, S, H, W) bool masks of ``predictor`` (this checkpoint's) for a whole case in the display frame."""
        from ..data import read_case

        if opened.case.kind != self.kind:
            raise AppError(f"checkpoint {self.path} was trained on {self.kind}s, {opened.case.case_id} is a "
                           f"{opened.case.kind}: it cannot draft this case")
        if opened.image.planar:
            prob = predictor.predict_image(opened.plane(0))
            return predictor.binarize(prob)[:, None]
        # The checkpoint slices its own way (orientation, axis); its prediction goes back to the
        # file's orientation and then into the app's frame.
        vol = read_case(opened.case.path, self.kind, predictor.cfg.data.served)
        masks = predictor.binarize(predictor.predict_volume(vol))
        return np.stack([opened.to_display(opened.image.to_served(vol.to_original(m))) for m in masks])
