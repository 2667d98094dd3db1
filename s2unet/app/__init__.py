"""The labeling web app: ``python -m s2unet label --images PATH [--checkpoint best.pt] [--out DIR]``.

* :mod:`.workspace` — the cases it opens, the masks it saves (training layout), autosave, log;
* :mod:`.editor` — editing one case: clicks and boxes through the prompted model, brush and
  eraser, drafts, undo / redo;
* :mod:`.server` — the FastAPI application and its start-up; ``static/`` is the page.

The app is the top layer: it uses the baselines, inference and data layers, and nothing
imports it.
"""
from .editor import CaseEditor, stroke_mask
from .server import LabelApp, build_state, create_app, serve
from .workspace import AppError, Layer, layers_from, list_cases

__all__ = ["AppError", "CaseEditor", "LabelApp", "Layer", "build_state", "create_app", "layers_from", "list_cases",
           "serve", "stroke_mask"]
