"""``python -m s2unet label``: the labeling web app (FastAPI + uvicorn, one static canvas page).

The server holds all state (masks, undo history, click sessions, the prompted model and its
image embedding); the page only shows it and sends edits. Every edit is autosaved to the
output folder, so a closed tab or a crash loses nothing: opening the case again restores it.
Bad input (an unreadable image, a checkpoint of another task, an output folder that cannot be
written) comes back as a one-line message the page shows, and nothing labeled is dropped.
"""
from __future__ import annotations

import base64
import io
import ipaddress
import secrets
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Optional
from urllib.parse import urlsplit

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field, FiniteFloat

from ..baselines.sam_predictors import PromptedPredictor, create_predictor
from ..weights import CheckpointError
from .drafts import DraftModel
from .editor import CaseEditor
from .workspace import (
    AppError,
    AutosaveMismatch,
    CaseFile,
    Layer,
    OpenCase,
    append_log,
    check_case_source,
    check_writable,
    draft_dice,
    hold_output,
    keep_aside,
    layers_from,
    list_cases,
    mask_path,
    read_autosave,
    read_saved_masks,
    remove_autosave,
    save_masks,
    saved_labelled,
    write_autosave,
)

STATIC = Path(__file__).with_name("static")
TOKEN_COOKIE = "s2unet_label_token"


def _png(array: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buf, format="PNG")
    return buf.getvalue()


def _mask_b64(mask: np.ndarray) -> str:
    return base64.b64encode(_png(mask.astype(np.uint8) * 255)).decode("ascii")


# ------------------------------------------------------------------------------------- state
@dataclass
class LabelApp:
    """Everything the server knows: cases, layers, models, and the cases being edited.

    Attributes:
        cases: the files to label, by case id.
        layers: the labels.
        out: the output folder.
        predictor: the prompted model for clicks and boxes (None when it could not load).
        drafter: the s2unet checkpoint for drafts (None when not given or unusable).
        problems: start-up messages the page shows (missing weights, wrong checkpoint...).
        editors: the cases opened so far.
        kept: per case, the message of its autosave set aside when it was opened.
        held: the lock on the output folder (:meth:`close` releases it).
    """

    cases: dict[str, CaseFile]
    layers: list[Layer]
    out: Path
    predictor: Optional[PromptedPredictor] = None
    drafter: Optional[DraftModel] = None
    problems: list[str] = field(default_factory=list)
    editors: dict[str, CaseEditor] = field(default_factory=dict)
    kept: dict[str, str] = field(default_factory=dict)
    held: ExitStack = field(default_factory=ExitStack)
    lock: threading.RLock = field(default_factory=threading.RLock)
    worker: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(max_workers=1))

    def close(self) -> None:
        """Stop the background work and release the output folder."""
        self.worker.shutdown(wait=True)
        self.held.close()

    @property
    def label_names(self) -> list[str]:
        return [layer.name for layer in self.layers]

    def case(self, case_id: str) -> CaseFile:
        if case_id not in self.cases:
            raise AppError(f"unknown case {case_id!r}")
        return self.cases[case_id]

    def editor(self, case_id: str) -> CaseEditor:
        """The case's editor, opening it on first use: autosaved work first, else saved masks.

        An autosave made for other labels or another image is moved aside (and said so), not
        overwritten by the next edit.

        Raises:
            AppError: the image cannot be read, or its saved masks / autosave cannot, or the
                output folder holds a case of this name saved from another image.
        """
        if case_id not in self.editors:
            opened = OpenCase(self.case(case_id))
            check_case_source(self.out, opened)
            shape = (len(self.layers), opened.n_slices, *opened.plane_shape)
            try:
                restored = read_autosave(self.out, opened.case, shape, self.label_names, opened.digest)
            except AutosaveMismatch as exc:
                self.kept[case_id] = keep_aside(self.out, case_id, str(exc))
                print(f"warning: {self.kept[case_id]}", flush=True)
                restored = None
            if restored is not None:
                ed = CaseEditor(opened, self.layers, restored.masks, restored.stats, restored.labelled)
                ed.draft, ed.drafted, ed.draft_source = restored.draft, restored.drafted, restored.draft_source
                ed.restored_from = "autosave"
            else:
                saved = read_saved_masks(self.out, self.layers, opened)
                labelled = saved_labelled(self.out, opened) if saved is not None else None
                ed = CaseEditor(opened, self.layers, saved, labelled=labelled)
                ed.restored_from = "saved masks" if saved is not None else ""
            self.editors[case_id] = ed
        return self.editors[case_id]

    def autosave(self, ed: CaseEditor) -> str:
        """Write the case's work in progress; returns the problem as a note, "" when written."""
        try:
            write_autosave(self.out, ed.opened.case, ed.masks, ed.labelled, ed.draft, ed.drafted, ed.draft_source,
                           ed.stats, self.label_names, ed.opened.digest)
        except AppError as exc:
            return str(exc)
        return ""

    def require_predictor(self) -> PromptedPredictor:
        if self.predictor is None:
            raise AppError("no prompted model is loaded, so clicks and boxes are off: "
                           + "; ".join(self.problems or ["start the app with --prompted mobilesam"]))
        return self.predictor

    def warm(self, ed: CaseEditor, plane: int, window: str) -> None:
        """Embed a plane in the background, so that the first click on it answers fast."""
        if self.predictor is None:
            return
        predictor = self.predictor

        def job() -> None:
            with self.lock:
                predictor.set_image(ed.opened.plane(plane, window), key=(ed.opened.case.case_id, plane, window))

        self.worker.submit(job)


def plane_state(app: LabelApp, ed: CaseEditor, plane: int, note: str = "", **extra: Any) -> dict[str, Any]:
    """What the page needs after an edit: the plane's masks, undo/redo and the counters."""
    if not 0 <= plane < ed.masks.shape[1]:
        raise AppError(f"slice {plane} outside 0..{ed.masks.shape[1] - 1}")
    autosave_note = app.autosave(ed)
    return {
        "case": ed.opened.case.case_id, "plane": plane,
        "masks": [_mask_b64(ed.masks[c, plane]) for c in range(ed.masks.shape[0])],
        "can_undo": ed.can_undo, "can_redo": ed.can_redo, "stats": ed.stats.as_dict(),
        "labelled": bool(ed.labelled[plane]), "n_labelled": int(ed.labelled.sum()),
        "note": "; ".join(n for n in (note, autosave_note) if n), **extra,
    }


# ----------------------------------------------------------------------------------- requests
def _drafter(app: LabelApp, why: str) -> DraftModel:
    """The app's checkpoint model, or an AppError saying ``no usable --checkpoint <why>``."""
    if app.drafter is None:
        raise AppError("no usable --checkpoint " + why)
    return app.drafter


class Where(BaseModel):
    case: str
    plane: int = 0
    layer: int = 0
    window: str = "auto"


#: Limits that keep one request from holding the server (and its lock) for long.
MAX_BODY_BYTES = 1 << 20
MAX_STROKE_POINTS = 5000
MAX_COORDINATE = 1e5  # pixels; any image the app opens is far smaller
Coordinate = Annotated[FiniteFloat, Field(ge=-MAX_COORDINATE, le=MAX_COORDINATE)]


class ClickRequest(Where):
    x: Coordinate
    y: Coordinate
    add: bool = True


class BoxRequest(Where):
    box: list[Coordinate] = Field(min_length=4, max_length=4)


class StrokeRequest(Where):
    points: list[tuple[Coordinate, Coordinate]] = Field(min_length=1, max_length=MAX_STROKE_POINTS)
    radius: FiniteFloat = 5.0
    erase: bool = False


class TextRequest(Where):
    phrase: str = Field(min_length=1, max_length=200)


class MarkRequest(Where):
    labelled: bool
    all_slices: bool = False


class SaveRequest(BaseModel):
    case: str
    overwrite: bool = False


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def _loopback_authority(authority: str, port: Optional[int]) -> bool:
    """Whether a ``Host`` header names this machine's loopback (and, when known, the app's port).

    A page of another site whose name an attacker points at 127.0.0.1 (DNS rebinding) sends its
    own name here, so it is told apart from the app's page.
    """
    try:
        parts = urlsplit("//" + authority)
        given = parts.port
    except ValueError:
        return False
    return parts.hostname in LOOPBACK_NAMES and (port is None or (given or 80) == port)


def _refuse(status: int, detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status)


class _BodyLimit:
    """Refuse (413) a request body larger than ``limit`` bytes before the app reads any of it
    (a body without ``Content-Length`` is counted as it arrives)."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = _refuse(413, f"request body larger than {self.limit} bytes refused: the app's requests are "
                                 f"far smaller (a stroke holds at most {MAX_STROKE_POINTS} points)")
        length = dict(scope["headers"]).get(b"content-length", b"0")
        if not length.isdigit() or int(length) > self.limit:
            await too_large(scope, receive, send)
            return
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > self.limit:
                await too_large(scope, receive, send)
                return
        body: Optional[bytes] = b"".join(chunks)

        async def replay() -> dict[str, Any]:
            nonlocal body
            if body is None:
                return await receive()
            message, body = {"type": "http.request", "body": body, "more_body": False}, None
            return message

        await self.app(scope, replay, send)


def create_app(state: LabelApp, token: Optional[str] = None, port: Optional[int] = None,
               allow_remote: bool = False) -> FastAPI:
    """The FastAPI application over a :class:`LabelApp`.

    Args:
        state: the app state.
        token: when set, every request must carry it (``?token=`` once, then a cookie, or an
            ``X-Token`` header); required when binding to a non-loopback address.
        port: the port served; a ``Host`` header must name it (None: any port).
        allow_remote: answer any ``Host`` name; otherwise only localhost, 127.0.0.1 and [::1].

    Returns:
        The application (serve it with uvicorn).
    """
    api = FastAPI(title="s2unet label", docs_url=None, redoc_url=None, openapi_url=None)
    api.add_middleware(_BodyLimit, limit=MAX_BODY_BYTES)  # added first: runs after the guard below

    @api.middleware("http")
    async def guard(request: Request, call_next):  # type: ignore[no-untyped-def]
        host = request.headers.get("host", "")
        if not allow_remote and not _loopback_authority(host, port):
            return _refuse(403, f"request for host {host!r} refused: the app answers localhost, 127.0.0.1 and [::1]"
                                + (f" on port {port}" if port else "") + " only (--allow-remote serves other names)")
        origin = request.headers.get("origin")
        if request.method in STATE_CHANGING and origin is not None and \
                origin.lower() not in (f"http://{host.lower()}", f"https://{host.lower()}"):
            return _refuse(403, f"request from origin {origin!r} refused: edits come only from the app's own page")
        if token is not None:
            given = request.query_params.get("token") or request.cookies.get(TOKEN_COOKIE) \
                or request.headers.get("x-token")
            # bytes: compare_digest refuses str with non-ASCII characters (a TypeError, a 500)
            if not given or not secrets.compare_digest(given.encode(), token.encode()):
                return _refuse(401, "access token required: open the address printed when the app started")
        response = await call_next(request)
        if token is not None and request.query_params.get("token"):
            response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="strict")
        return response

    @api.exception_handler(RequestValidationError)
    async def bad_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        def where(error: dict[str, Any]) -> str:
            return ".".join(str(x) for x in error["loc"][1:]) or "body"

        return _refuse(422, "request refused: " + "; ".join(f"{where(e)}: {e['msg']}" for e in exc.errors()))

    @api.exception_handler(AppError)
    async def app_error(_: Request, exc: AppError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @api.exception_handler(FileExistsError)
    async def exists_error(_: Request, exc: FileExistsError) -> JSONResponse:
        return JSONResponse({"detail": str(exc), "confirm": "overwrite"}, status_code=409)

    @api.get("/")
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    api.mount("/static", StaticFiles(directory=STATIC), name="static")

    @api.get("/api/info")
    def info() -> dict[str, Any]:
        with state.lock:
            cases = [{"id": c.case_id, "kind": c.kind, "file": c.path.name,
                      "saved": all(mask_path(state.out, layer, c).exists() for layer in state.layers)}
                     for c in state.cases.values()]
        return {
            "cases": cases, "layers": [layer.name for layer in state.layers],
            "prompted": state.predictor.name if state.predictor is not None else None,
            "checkpoint": str(state.drafter.path) if state.drafter is not None else None,
            "text": state.drafter is not None and state.drafter.takes_text,
            "problems": state.problems, "out": str(state.out),
        }

    @api.post("/api/open")
    def open_case(req: Where) -> dict[str, Any]:
        with state.lock:
            ed = state.editor(req.case)
            ed.clear_object()
            ed.stats.restart_clock()
            h, w = ed.opened.plane_shape
            note = "; ".join(n for n in (f"restored from the {ed.restored_from}" if ed.restored_from else "",
                                         state.kept.pop(req.case, "")) if n)
            return plane_state(state, ed, min(req.plane, ed.masks.shape[1] - 1), note, kind=ed.opened.case.kind,
                               n_slices=ed.opened.n_slices, height=h, width=w,
                               windows=list(ed.opened.windows))

    @api.get("/api/image")
    def image(case: str, plane: int = 0, window: str = "auto") -> Response:
        with state.lock:
            ed = state.editor(case)
            pixels = ed.opened.plane(plane, window)
        state.warm(ed, plane, window)
        return Response(_png(np.round(pixels * 255).astype(np.uint8)), media_type="image/png",
                        headers={"Cache-Control": "no-store"})

    @api.post("/api/plane")
    def get_plane(req: Where) -> dict[str, Any]:
        with state.lock:
            ed = state.editor(req.case)
            ed.clear_object()
            return plane_state(state, ed, req.plane)

    @api.post("/api/click")
    def click(req: ClickRequest) -> dict[str, Any]:
        with state.lock:
            ed = state.editor(req.case)
            t0 = time.perf_counter()
            note = ed.click(state.require_predictor(), req.layer, req.plane, req.window, req.x, req.y, req.add)
            seconds = time.perf_counter() - t0
            return plane_state(state, ed, req.plane, note, seconds=round(seconds, 3))

    @api.post("/api/box")
    def box(req: BoxRequest) -> dict[str, Any]:
        with state.lock:
            ed = state.editor(req.case)
            t0 = time.perf_counter()
            ed.box(state.require_predictor(), req.layer, req.plane, req.window, tuple(req.box))  # type: ignore[arg-type]
            return plane_state(state, ed, req.plane, seconds=round(time.perf_counter() - t0, 3))

    @api.post("/api/stroke")
    def stroke(req: StrokeRequest) -> dict[str, Any]:
        with state.lock:
            ed = state.editor(req.case)
            ed.stroke(req.layer, req.plane, req.points, req.radius, req.erase)
            return plane_state(state, ed, req.plane)

    @api.post("/api/draft")
    def draft(req: Where) -> dict[str, Any]:
        with state.lock:
            ed = state.editor(req.case)
            drafter = _drafter(state, "for drafts: " + "; ".join(state.problems or [
                "start the app with --checkpoint RUN/best.pt (or draw a box)"]))
            masks = drafter.draft(ed.opened)
            ed.set_draft(masks, list(range(masks.shape[1])), str(drafter.path))
            return plane_state(state, ed, req.plane)

    @api.post("/api/text")
    def text(req: TextRequest) -> dict[str, Any]:
        with state.lock:
            ed = state.editor(req.case)
            drafter = _drafter(state, "answers phrases: start the app with --checkpoint of a text-prompted model")
            if not 0 <= req.layer < len(state.layers):
                raise AppError(f"layer {req.layer} outside 0..{len(state.layers) - 1}")
            mask, structure = drafter.ask(ed.opened, req.phrase)
            ed.set_draft(mask[None], list(range(mask.shape[0])), f"{drafter.path} ({req.phrase!r})",
                         layers=[req.layer])
            return plane_state(state, ed, req.plane, f"{req.phrase!r} taken as {structure}")

    @api.post("/api/mark")
    def mark(req: MarkRequest) -> dict[str, Any]:
        with state.lock:
            ed = state.editor(req.case)
            ed.mark(None if req.all_slices else req.plane, req.labelled)
            return plane_state(state, ed, req.plane)

    @api.post("/api/undo")
    def undo(req: Where) -> dict[str, Any]:
        with state.lock:
            ed = state.editor(req.case)
            return plane_state(state, ed, req.plane, "" if ed.undo() else "nothing to undo")

    @api.post("/api/redo")
    def redo(req: Where) -> dict[str, Any]:
        with state.lock:
            ed = state.editor(req.case)
            return plane_state(state, ed, req.plane, "" if ed.redo() else "nothing to redo")

    @api.post("/api/save")
    def save(req: SaveRequest) -> dict[str, Any]:
        with state.lock:
            ed = state.editor(req.case)
            files = save_masks(state.out, state.layers, ed.opened, ed.masks, ed.labelled, req.overwrite)
            record = {
                "case": ed.opened.case.case_id, "image": str(ed.opened.case.path),
                "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S"), **ed.stats.as_dict(),
                "draft": ed.draft_source or None,
                "dice_draft_vs_saved": draft_dice(state.layers, ed.masks, ed.draft, ed.drafted),
                "files": [str(p) for p in files],
                "labelled_slices": None if ed.opened.image.planar else np.flatnonzero(ed.labelled).tolist(),
            }
            note = ""
            try:
                append_log(state.out, record)
                remove_autosave(state.out, ed.opened.case)
            except OSError as exc:
                note = f"masks saved, but the log could not be written: {exc}"
            return {"saved": [str(p) for p in files], "record": record, "note": note}

    return api


# -------------------------------------------------------------------------------------- main
def build_state(images: str | Path, out: str | Path, labels: Optional[list[str]] = None,
                config: Optional[str | Path] = None, checkpoint: Optional[str | Path] = None,
                prompted: Optional[str] = "mobilesam") -> LabelApp:
    """Read the cases and load the models; problems that still leave labeling possible (no
    weights for the prompted model, an unusable checkpoint, an unwritable output folder) are
    kept for the page instead of raised.

    Args:
        images: an image / NIfTI file or a folder of them.
        out: the output folder.
        labels: label names, saved to ``masks/<name>``; default: the ``config``'s labels, else
            the checkpoint's, else ``["mask"]``.
        config: a training config whose labels (names and folders) the app uses, so that the
            output folder is that config's ``data.root``.
        checkpoint: an s2unet ``best.pt`` for drafts.
        prompted: a prompted predictor name (``mobilesam``, ``litemedsam``, ``sam2.1_hiera_*``)
            or None for none.

    Returns:
        The state.

    Raises:
        AppError: no images to label, bad label names, a config that cannot be read, an output
            folder another app holds or that is bound to another label set.
    """
    cases = {c.case_id: c for c in list_cases(Path(images))}
    problems: list[str] = []
    names, folders = labels, None
    if names is None and config is not None:
        names, folders = _config_labels(Path(config))
    if names is None and checkpoint is not None:
        names = _checkpoint_labels(Path(checkpoint), problems)
    layers = layers_from(names or ["mask"], folders)
    out = Path(out).expanduser()
    not_writable = check_writable(out)
    if not_writable:
        problems.append(not_writable)
        held = ExitStack()  # nothing can be written there, so nothing to guard
    else:
        held, kept = hold_output(out, layers)
        problems.extend(kept)
    state = LabelApp(cases, layers, out, problems=problems, held=held)
    if checkpoint is not None:
        try:
            state.drafter = DraftModel(Path(checkpoint), layers)
        except AppError as exc:
            problems.append(str(exc))
    if prompted:
        try:
            state.predictor = create_predictor(prompted)
        except (CheckpointError, KeyError) as exc:
            problems.append(f"prompted model {prompted}: {exc.args[0] if isinstance(exc, KeyError) else exc}")
    return state


def _config_labels(path: Path) -> tuple[list[str], list[str]]:
    """A training config's label names and folders (binary / multilabel tasks)."""
    from ..config import ConfigError, load_config
    from ..predict import channel_names

    try:
        cfg = load_config(path)
    except ConfigError as exc:
        raise AppError(str(exc)) from None
    if cfg.data.task == "multiclass":
        raise AppError(f"{path}: the app labels one mask per label (binary / multilabel), not multiclass label maps")
    return channel_names(cfg), list(cfg.data.labels)


def _checkpoint_labels(path: Path, problems: list[str]) -> Optional[list[str]]:
    """The labels a checkpoint predicts, to name the layers after (None when unreadable)."""
    from ..config import ConfigError, config_from_dict
    from ..models.checkpoint import read_checkpoint
    from ..predict import foreground_names

    try:
        return foreground_names(config_from_dict(read_checkpoint(path)["config"]))
    except (CheckpointError, ConfigError, KeyError) as exc:
        problems.append(f"checkpoint {path} cannot be used: {exc}")
        return None


def serve(state: LabelApp, host: str = "127.0.0.1", port: int = 8765, token: Optional[str] = None,
          allow_remote: bool = False) -> None:
    """Run the app until interrupted.

    Args:
        state: from :func:`build_state`.
        host: the address to bind; anything but loopback needs ``allow_remote`` and gets a token.
        port: the port.
        token: the access token (a random one is made for remote binding when None).
        allow_remote: confirm binding to a non-loopback address.

    Raises:
        AppError: a non-loopback host without ``allow_remote``, a port outside 1..65535, or one
            that cannot be bound (in use): before the address is printed.
    """
    import uvicorn

    if not _is_loopback(host):
        if not allow_remote:
            raise AppError(f"--host {host} would let other machines reach the app and its images; add "
                           "--allow-remote to confirm (an access token is then required)")
        token = token or secrets.token_urlsafe(24)
    listening = _listen(host, port)  # bound here, served below: no other server can take it in between
    for problem in state.problems:
        print(f"warning: {problem}")
    shown = "localhost" if _is_loopback(host) else host
    query = f"/?token={token}" if token else "/"
    print(f"s2unet label: {len(state.cases)} case(s), labels {', '.join(state.label_names)}, "
          f"saving to {state.out}\nopen http://{shown}:{port}{query}  (Ctrl+C to stop)", flush=True)
    try:
        config = uvicorn.Config(create_app(state, token, port, allow_remote), log_level="warning")
        uvicorn.Server(config).run(sockets=[listening])
    finally:
        listening.close()
        state.close()


def _listen(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` and listening, or the reason it cannot be, in one line."""
    if not 1 <= port <= 65535:
        raise AppError(f"--port {port} is outside 1..65535")
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        listening = socket.socket(family, socket.SOCK_STREAM)
    except OSError as exc:
        raise AppError(f"--host {host} cannot be used ({exc.strerror or exc})") from None
    try:
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
        listening.bind((host, port))
        listening.listen(2048)
    except OSError as exc:
        listening.close()
        raise AppError(f"cannot listen on {host}:{port} ({exc.strerror or exc}): another program uses the port; "
                       "choose another --port") from None
    return listening
