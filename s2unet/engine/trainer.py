"""The training loop: AdamW with warm-up and cosine decay, deep supervision, validation,
best/last checkpoints, exact resume and DistributedDataParallel under ``torchrun``."""
from __future__ import annotations

import math
import random
import time
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.distributed as dist
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from ..config import Config, save_config
from ..data import PhraseSampleDataset, RehearsalMix, build_datasets, case_identity, make_train_sampler
from ..data.fingerprint import dataset_fingerprint
from ..devices import resolve_device
from ..io import write_json
from ..runtime import torch_threads
from ..losses import build_loss
from ..metrics import FLAT_WINDOW, describe_empty_references
from ..models import SegmentationModel, check_model_config, create_model_from_config, get_architecture
from ..models.calibration import Calibration
from ..models.checkpoint import atomic_save, model_payload, read_checkpoint
from ..text import PhraseBank
from ..weights import CheckpointError
from .averaging import WeightAverage
from .checkpoint import init_from_checkpoint
from .feature_cache import FeatureCache
from .distributed import DistInfo, all_reduce_mean, barrier, init_distributed, shutdown
from .precision import resolve_amp, training_probe
from .records import MetricLog, write_run_records
from .rehearsal import with_rehearsal
from .resume import config_differences, load_resume
from .rundir import check_latest_link, hold_run_dir, latest_link, point_latest_link
from .step import TrainStep
from .validation import validate

console = Console(stderr=True)


@dataclass
class TrainState:
    """Where training stands; saved in ``last.pt``."""

    epoch: int = 0  # epochs completed
    step: int = 0  # optimiser steps completed
    best: float = -1.0
    best_epoch: int = -1


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def lr_lambda(warmup: int, total: int):
    """Linear warm-up to the base rate, then cosine decay to zero."""

    def fn(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return fn


def _rng_state() -> dict[str, Any]:
    return {
        "python": random.getstate(),
        "numpy": torch.from_numpy(np.random.get_state()[1].astype(np.int64)),
        "numpy_pos": int(np.random.get_state()[2]),
        "torch": torch.get_rng_state(),
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"], 0, 0.0))
    torch.set_rng_state(state["torch"])


def _new_run_dir(cfg: Config, info: DistInfo) -> Path:
    stamp = [datetime.now().strftime("%Y%m%d-%H%M%S")]
    if info.enabled:  # every rank must write into the directory rank 0 named
        dist.broadcast_object_list(stamp, src=0)
    run_dir = Path(cfg.output_dir) / f"{cfg.name}-{stamp[0]}"
    if info.is_main:
        check_latest_link(latest_link(run_dir, cfg.name))  # before training, not at the first best.pt
        run_dir.mkdir(parents=True, exist_ok=False)
    return run_dir


def _steps_per_epoch(cfg: Config, n_train: int, world: int) -> int:
    per_step = cfg.train.batch_size * cfg.train.accumulate * world
    return cfg.train.steps_per_epoch or max(1, n_train // per_step)


def train(cfg: Config | None, resume: str | Path | None = None, argv: list[str] | None = None,
          resume_overrides: Sequence[str] = (), init_from: str | Path | None = None, init_relabel: bool = False,
          trainer_class: type[Trainer] | None = None) -> Path:
    """Train the model a config describes; returns the run directory.

    Args:
        cfg: the resolved config of a new run (ignored, may be None, when resuming: the run's
            own config is used, so a resumed run cannot drift from the one it continues).
        resume: a run directory holding ``last.pt`` and ``config.yaml``.
        argv: the command line, recorded in the run directory.
        resume_overrides: ``key=value`` changes to a resumed run, only the keys of
            :data:`~s2unet.engine.resume.RESUME_KEYS` (e.g. ``train.epochs`` to extend it).
        init_from: a trained checkpoint whose tensors a new run starts from (fine-tuning).
        init_relabel: allow ``init_from`` a checkpoint with other label names.
        trainer_class: a :class:`Trainer` subclass that overrides some of its hooks (default Trainer).

    Raises:
        CheckpointError, ConfigError: see :func:`~s2unet.engine.resume.load_resume`.
    """
    if resume is not None and init_from is not None:
        raise CheckpointError("--resume continues a run and --init-from starts a new one from a checkpoint; give one")
    if init_relabel and init_from is None:
        raise CheckpointError("--init-relabel allows --init-from a checkpoint with other labels; give --init-from too")
    if init_from is not None:
        read_checkpoint(init_from)  # a wrong path fails before the data check and model build
    saved = None
    if resume is not None:
        point = load_resume(resume, resume_overrides)
        cfg, saved = point.config, point.checkpoint
    elif cfg is None:
        raise ValueError("train() needs a config for a new run")
    device = resolve_device(cfg.train.device, "train.device")
    info = init_distributed(device)
    try:
        with ExitStack() as hold, torch_threads(cfg.train.threads):
            trainer = (trainer_class or Trainer)(cfg, device, info, saved, resume, argv or [], init_from, init_relabel)
            return trainer.fit(hold)
    finally:
        shutdown(info)


class Trainer:
    """One training run, in steps a subclass can override (as nnU-Net's trainer does):
    :meth:`preflight`, :meth:`build_model`, :meth:`configure_optimizers`, :meth:`train_step`,
    :meth:`validate` and :meth:`on_epoch_end`. :meth:`fit` runs them in a fixed order, which
    fixes the order random numbers are drawn in, so a resumed run ends bit for bit where an
    uninterrupted one does.

    Args:
        cfg: the run's resolved config.
        device: where it trains (:func:`~s2unet.devices.resolve_device`).
        info: this process's place in a ``torchrun`` job (default: a single process).
        saved: the ``last.pt`` payload of a run being resumed.
        resume: that run's directory.
        argv: the command line, recorded in the run directory.
        init_from, init_relabel: see :func:`train`.
    """

    def __init__(self, cfg: Config, device: torch.device, info: DistInfo | None = None, saved: dict | None = None,
                 resume: str | Path | None = None, argv: Sequence[str] = (), init_from: str | Path | None = None,
                 init_relabel: bool = False) -> None:
        self.cfg, self.device, self.info, self.saved = cfg, device, info or DistInfo(), saved
        self.resume, self.argv, self.init_from, self.init_relabel = resume, list(argv), init_from, init_relabel

    # ----------------------------------------------------------------------------- hooks
    def preflight(self) -> None:
        """The cheap checks, before any heavy work: an unknown encoder, an image size it cannot
        take, a missing encoder file, bad loss keys, a text model or bad data stop the run here
        (``train.py --check-only`` runs just these). Sets ``loss_fn``, ``bank`` and ``bundle``."""
        cfg = self.cfg
        check_model_config(cfg)
        self.loss_fn = build_loss(cfg.loss, multiclass=cfg.data.task == "multiclass")  # checks the loss's keys
        self.bank = _phrase_bank(cfg, self.saved)
        self.bundle = with_rehearsal(build_datasets(cfg.data, cfg.seed, val_max_cases=cfg.train.val_max_cases), cfg)

    def build_model(self) -> SegmentationModel:
        """The model on ``device``, started from ``init_from`` and prepared on the training data
        (a resumed run's preparation is in its last.pt)."""
        model = create_model_from_config(self.cfg).to(self.device)
        if self.init_from is not None:
            for warning in init_from_checkpoint(model, self.cfg, self.init_from, self.init_relabel):
                console.print(f"[yellow]warning:[/] {warning}")
        if self.saved is None:
            model.prepare(self.bundle.train)
        return model

    def configure_optimizers(self, steps_per_epoch: int) -> tuple[torch.optim.Optimizer, Any]:
        """AdamW on the trainable parameters, warm-up then cosine decay over the whole run."""
        t_cfg = self.cfg.train
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(self.params, lr=t_cfg.lr, weight_decay=t_cfg.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lr_lambda(t_cfg.warmup_steps, steps_per_epoch * t_cfg.epochs))
        return optimizer, scheduler

    def train_step(self, batch: dict[str, Any]) -> float:
        """Forward and backward of one batch (the optimiser steps every ``train.accumulate``);
        returns its loss."""
        image = batch["image"].to(self.device, non_blocking=True)
        target = batch["mask"].to(self.device, non_blocking=True)
        features = None
        if self.cache is not None:
            keys = list(zip(batch["case"], batch["slice"].tolist()))
            features = partial(self.cache.features, self.model, image, keys)
        # text-prompted: the embeddings of the phrases drawn for each image (B, P, D)
        text = None if self.phrase_table is None else self.phrase_table[batch["phrase"].to(self.device)]
        return self.step.backward(image, target, features, text)

    def validate(self, model: SegmentationModel, cases, **kwargs: Any) -> dict[str, Any]:
        """Score ``model`` on ``cases`` (:func:`~s2unet.engine.validation.validate`)."""
        return validate(model, self.cfg, cases, self.device, text=self.bank, **kwargs)

    def on_epoch_end(self, record: dict[str, Any], bar: Progress) -> None:
        """On the main process after each epoch: log it, validate (every ``val_every`` epochs and
        at the end), keep the best, write last.pt.

        Both checkpoints carry the training data's ``fingerprint`` (:mod:`s2unet.data.fingerprint`)
        and ``trained_cases``, the identities of the training cases (:func:`~s2unet.data.case_identity`).
        With a weight average (``train.ema``) the average is validated and saved as ``best.pt``;
        ``last.pt`` keeps both, so a resumed run continues each.
        """
        cfg, t_cfg, progress, run_dir = self.cfg, self.cfg.train, self.progress, self.run_dir
        self.log.append(record)
        # A plain line per epoch: the live bar is not drawn when output goes to a file.
        bar.console.print(f"epoch {progress.epoch}: train loss {record['loss']:.4f}, "
                          f"{record['images_per_s']:.2f} img/s, lr {record['lr']:.2e}")
        # The fingerprint, the cases trained on and the phrase bank travel with the model.
        stored: dict[str, Any] = {"fingerprint": self.fingerprint, "trained_cases": list(self.trained_cases)}
        if self.bank is not None:
            stored["text"] = self.bank.to_payload()
        kept = {} if self.average is None else {"ema": self.average.state()}
        scored = self.model if self.average is None else self.average.model
        last_epoch = progress.epoch == t_cfg.epochs
        if self.bundle.val is None:
            # Without validation cases the latest model is the one to use.
            _save_best(model_payload(scored, cfg, 0.5, {}, epoch=progress.epoch, **stored), run_dir, cfg.name)
        elif progress.epoch % t_cfg.val_every == 0 or last_epoch:
            result = self.validate(scored, self.bundle.val, max_cases=t_cfg.val_max_cases)
            score = result["summary"][t_cfg.metric]
            self.log.append({"kind": "val", "epoch": progress.epoch, "step": progress.step, **result["summary"]})
            bar.console.print(
                f"epoch {progress.epoch}: validation {t_cfg.metric} {score:.4f} ({_threshold_note(result['summary'])}, "
                f"{len(result['cases'])} cases{_empty_reference_note(result['summary'], len(result['cases']), t_cfg.metric)})"
            )
            if score > progress.best:
                progress.best, progress.best_epoch = score, progress.epoch
                _save_best(model_payload(scored, cfg, result["threshold"], result["summary"], epoch=progress.epoch,
                                         validation_cases=result["cases"],
                                         calibration=result["calibration"].to_payload(), **stored), run_dir, cfg.name)
            self.log.plot(t_cfg.metric)
        atomic_save(
            model_payload(self.model, cfg, 0.5, {}, optimizer=self.optimizer.state_dict(),
                          scheduler=self.scheduler.state_dict(), progress=vars(progress).copy(), rng=_rng_state(),
                          **stored, **kept),
            run_dir / "last.pt",
        )

    # ------------------------------------------------------------------------------- run
    def fit(self, hold: ExitStack) -> Path:
        """Run the hooks: check, set up (or restore ``saved``), train every epoch, test; returns
        the run directory. ``hold`` keeps the run directory locked until it is closed."""
        cfg, t_cfg, info, device = self.cfg, self.cfg.train, self.info, self.device
        started = time.perf_counter()
        seed_everything(cfg.seed)
        self.preflight()
        bundle = self.bundle
        self.run_dir = run_dir = Path(self.resume) if self.resume is not None else _new_run_dir(cfg, info)
        if info.is_main:  # locked until train() returns; marked FAILED if anything below raises
            hold.enter_context(hold_run_dir(run_dir))
        # Which data the checkpoints' model learnt from, by content (compare's overlap check).
        train_ids = set(bundle.split["train"])
        self.trained_cases = [case_identity(c) for c in bundle.cases if c.case_id in train_ids] if info.is_main else []
        if info.is_main and self.saved is None:
            write_run_records(run_dir, cfg, bundle.split, self.argv, info.world_size)
        elif info.is_main:
            save_config(cfg, run_dir / "config.yaml")  # with the --set changes resuming applied

        arch = get_architecture(cfg.model.arch)
        self.model = model = self.build_model()
        if info.is_main:
            self._announce(arch.title(cfg.model))
        amp = [resolve_amp(t_cfg.amp, device, training_probe(model, cfg)) if info.is_main else None]
        if info.enabled:  # one measurement, and every rank computes in the same precision
            dist.broadcast_object_list(amp, src=0)
        amp_dtype = amp[0].dtype
        if info.is_main:
            console.print(amp[0].reason)
        steps_per_epoch = _steps_per_epoch(cfg, len(bundle.train), info.world_size)
        total_steps = steps_per_epoch * t_cfg.epochs
        self.optimizer, self.scheduler = self.configure_optimizers(steps_per_epoch)

        samples_per_epoch = steps_per_epoch * t_cfg.batch_size * t_cfg.accumulate * info.world_size
        sampler = make_train_sampler(bundle.train, cfg.data, samples_per_epoch, cfg.seed, info.rank, info.world_size)
        # Text-prompted: each image with phrases of its structures; the sampler draws images as before.
        train_data = bundle.train if self.bank is None else PhraseSampleDataset(
            bundle.train, self.bank.train_ids(), cfg.text.phrases_per_image, cfg.seed)
        loader = DataLoader(
            train_data,
            batch_size=t_cfg.batch_size,
            sampler=sampler,
            num_workers=cfg.data.num_workers,
            drop_last=True,
            pin_memory=device.type == "cuda",
            persistent_workers=False,
        )

        self.progress = TrainState()
        self.log = MetricLog(run_dir)
        # What the model's inputs look like, stored with it so inference can tell a far-off case.
        self.fingerprint = _fingerprint(bundle.train) if info.is_main else None
        self.average = WeightAverage(model, t_cfg.ema) if t_cfg.ema else None
        if self.saved is not None:
            self._restore(self.saved)
        progress = self.progress

        net: torch.nn.Module = model
        if info.enabled:
            net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        if t_cfg.compile:
            net = torch.compile(net)
        self.cache = None
        if t_cfg.cache_features and arch.caches_features and not model.encoder_trains and not cfg.data.augment.enabled:
            self.cache = FeatureCache(t_cfg.feature_cache_mb * 2**20, run_dir / f"feature_cache_rank{info.rank}")
        self.step = TrainStep(net, self.loss_fn, self.optimizer, self.params, device, amp_dtype, t_cfg.grad_clip,
                              t_cfg.accumulate, with_target=model.trains_with_target)
        self.phrase_table = None if self.bank is None else self.bank.embeddings.to(device)

        with _progress_bar(info) as bar:
            task = bar.add_task("train", total=total_steps, completed=progress.step, loss=float("nan"), ips=0.0)
            for epoch in range(progress.epoch, t_cfg.epochs):
                sampler.set_epoch(epoch)
                train_data.set_epoch(epoch)  # per-item augmentation (and phrase) seeds depend on it
                model.train()
                loss_sum, n_loss, t0, seen = 0.0, 0, time.perf_counter(), 0
                for i, batch in enumerate(loader):
                    loss = self.train_step(batch)
                    loss_sum, n_loss, seen = loss_sum + loss, n_loss + 1, seen + len(batch["image"])
                    if (i + 1) % t_cfg.accumulate:
                        continue
                    self.step.update()
                    self.scheduler.step()
                    if self.average is not None:
                        self.average.update(model)
                    progress.step += 1
                    ips = seen * info.world_size / (time.perf_counter() - t0)
                    bar.update(task, advance=1, loss=loss_sum / n_loss, ips=ips)
                mean_loss = all_reduce_mean(torch.tensor(loss_sum / max(1, n_loss)), info).item()
                progress.epoch = epoch + 1
                record: dict[str, Any] = {
                    "kind": "train", "epoch": progress.epoch, "step": progress.step, "loss": mean_loss,
                    "lr": self.scheduler.get_last_lr()[0],
                    "images_per_s": seen * info.world_size / (time.perf_counter() - t0),
                }
                if info.is_main:
                    self.on_epoch_end(record, bar)
                barrier(info)
        if self.cache is not None:
            self.cache.clear()
        if info.is_main:
            self._finish(started, amp[0].name)
        return run_dir

    def _announce(self, title: str) -> None:
        """The run's opening lines: the model, the data, what is rehearsed, score notes."""
        model, bundle, cfg = self.model, self.bundle, self.cfg
        counts = model.parameter_counts()
        console.print(
            f"[bold]{cfg.name}[/]: {title}, {len(bundle.train)} training / "
            f"{len(bundle.val or [])} validation items, trainable {counts['trainable']:,} of {counts['total']:,} "
            f"parameters ({counts['trainable_percent']}%), run dir {self.run_dir}"
        )
        if isinstance(bundle.train, RehearsalMix):
            console.print(f"rehearsing {len(bundle.train.source)} items of {len(bundle.split['rehearsed'])} cases "
                          f"(the training cases of {cfg.data.rehearse_from}) at {cfg.data.rehearse_share:.0%} of the draws")
        for note in model.score_notes():  # e.g. oracle prompts behind the validation score
            console.print(f"[yellow]note:[/] {note}")

    def _restore(self, saved: dict) -> None:
        """Continue from a ``last.pt``: weights, optimiser, schedule, progress, average and RNG."""
        last = self.run_dir / "last.pt"
        self.model.load_trained_state_dict(saved["state_dict"], source=str(last))
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        # The optimiser kept the rate of the saved schedule; a run extended by --set train.epochs
        # must take its next step at the rate of the stretched one (identical when unchanged).
        for group, base, fn in zip(self.optimizer.param_groups, self.scheduler.base_lrs, self.scheduler.lr_lambdas):
            group["lr"] = base * fn(self.scheduler.last_epoch)
        self.progress = progress = TrainState(**saved["progress"])
        if self.average is not None:
            if "ema" not in saved:
                raise CheckpointError(f"{last} holds no weight average (train.ema); resume it without one")
            self.average.load_state(saved["ema"], source=f"{last} (weight average)")
        _set_rng_state(saved["rng"])
        if self.info.is_main:
            self.log.truncate_after(progress.step)
            changed = [f"{k} {a} -> {b}" for k, (a, b) in config_differences(saved["config"], self.cfg.to_dict()).items()]
            console.print(f"resuming {self.run_dir} after epoch {progress.epoch} (step {progress.step})"
                          + (f"; applied {', '.join(changed)}" if changed else ""))

    def _finish(self, started: float, precision: str) -> None:
        """Test best.pt (when there are test cases) and write summary.json."""
        t_cfg, progress, run_dir = self.cfg.train, self.progress, self.run_dir
        test = self._test() if self.bundle.test is not None else {}
        validated = self.bundle.val is not None
        # Without validation cases there is no best score: null, not the -1 the search starts from.
        best = {"best_" + t_cfg.metric: progress.best if validated else None,
                "best_epoch": progress.best_epoch if validated else None}
        if not validated:
            best["note"] = "no validation cases: best.pt is the last epoch, at threshold 0.5"
        write_json(run_dir / "summary.json", {**best, "epochs": progress.epoch, "steps": progress.step, **test,
                                             "trainable_parameters": self.model.parameter_counts()["trainable"],
                                             "wall_seconds": round(time.perf_counter() - started, 1),
                                             "threads": torch.get_num_threads(), "precision": precision})
        done = (f"best validation {t_cfg.metric} {progress.best:.4f} at epoch {progress.best_epoch}, "
                f"{_threshold_note(read_checkpoint(run_dir / 'best.pt')['metrics'])}" if validated else best["note"])
        console.print(f"done: {done}; {run_dir}")

    def _test(self) -> dict[str, Any]:
        """Score ``best.pt`` on the test split at its own (validation-tuned) threshold and calibration.

        With ``data.split.mode: group`` the test cases come from sources never trained on, so this
        is the cross-source score. Logged as a ``test`` record and returned for ``summary.json``.
        """
        path, metric = self.run_dir / "best.pt", self.cfg.train.metric
        best = read_checkpoint(path)
        self.model.load_trained_state_dict(best["state_dict"], source=str(path))
        result = self.validate(self.model, self.bundle.test, threshold=best["threshold"],
                               calibration=Calibration.from_payload(best.get("calibration"), str(path)))
        self.log.append({"kind": "test", "epoch": best.get("epoch"), **result["summary"]})
        score = result["summary"][metric]
        console.print(f"test {metric} {score:.4f} on {len(result['cases'])} cases (threshold {result['threshold']:.2f})")
        return {"test_" + metric: score, "test_threshold": result["threshold"], "test_cases": result["cases"]}


def _fingerprint(train: Any) -> dict:
    """The training inputs' fingerprint (a rehearsing run's: its new and its rehearsed items)."""
    parts = [train.new, train.source] if isinstance(train, RehearsalMix) else [train]
    fingerprint = dataset_fingerprint(parts)
    console.print(f"fingerprint of {fingerprint.n_slices} training slices stored in the checkpoints")
    return fingerprint.to_payload()


def _phrase_bank(cfg: Config, saved: dict | None) -> PhraseBank | None:
    """A text-prompted run's phrase bank: the one in last.pt when resuming, else embedded now."""
    if not cfg.text.enabled:
        return None
    if saved is not None:
        return PhraseBank.from_payload(saved.get("text"), cfg.text, source="last.pt")
    bank = PhraseBank.build(cfg)
    console.print(f"text: {len(bank.phrases)} phrases of {len(bank.structures)} structures embedded by {bank.model}; "
                  f"a phrase is refused below side-free similarity {bank.cutoff:.3f} to the structure of its side "
                  f"or margin {bank.margin_floor:.3f} over the next")
    return bank


def _threshold_note(summary: dict[str, Any]) -> str:
    """``threshold 0.40, Dice range 0.012 over +-0.1, temperature 2.1`` from a validation summary
    (the threshold alone for models without a tuning curve)."""
    note = f"threshold {summary['threshold']:.2f}"
    if "threshold_flatness" in summary:
        note += (f", Dice range {summary['threshold_flatness']:.3f} over +-{FLAT_WINDOW:g}, "
                 f"temperature {summary['temperature']:.3g}")
    return note


def _empty_reference_note(summary: dict[str, Any], n_cases: int, metric: str) -> str:
    """The validation line's note on empty references ("" when there are none).

    Empty references score 1 or 0 by the metrics' rules, so the note sits next to the mean they
    are in, with the mean that leaves them out (per label when there are several).

    Args:
        summary: the ``summary`` of :func:`validate`.
        n_cases: the number of validation cases.
        metric: the model-selection metric.

    Returns:
        ``"; <which cases>, scored 1 if nothing is predicted else 0; without them <mean>"`` or "".
    """
    empty = summary["n_cases_empty_gt"]
    if not empty:
        return ""
    by_label = {k.split("/", 1)[1]: v for k, v in summary.items() if k.startswith("n_cases_empty_gt/")}
    which = (f"empty references: {describe_empty_references(by_label, n_cases)}" if by_label
             else f"{empty} with an empty reference")
    return (f"; {which}, scored 1 if nothing is predicted else 0; without them{' per label' if by_label else ''} "
            f"{summary.get('with_gt_' + metric, float('nan')):.4f}")


def _save_best(payload: dict, run_dir: Path, name: str) -> None:
    """Write ``best.pt``; its first write in a run points ``<name>-latest`` at the run, so the
    link never names a run without a checkpoint."""
    first = not (run_dir / "best.pt").exists()
    atomic_save(payload, run_dir / "best.pt")
    if first:
        point_latest_link(latest_link(run_dir, name), run_dir)


def _progress_bar(info: DistInfo) -> Progress:
    return Progress(
        TextColumn("[bold blue]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}"), TextColumn("{task.fields[ips]:.1f} img/s"),
        TimeElapsedColumn(), TimeRemainingColumn(), console=console, disable=not info.is_main,
    )
