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
          resume_overrides: Sequence[str] = (), init_from: str | Path | None = None, init_relabel: bool = False) -> Path:
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
        with ExitStack() as run_dir_hold:
            return _train(cfg, device, info, saved, resume, argv or [], run_dir_hold, init_from, init_relabel)
    finally:
        shutdown(info)


def _train(cfg: Config, device: torch.device, info: DistInfo, saved: dict | None, resume, argv: list[str],
           run_dir_hold: ExitStack, init_from: str | Path | None = None, init_relabel: bool = False) -> Path:
    t_cfg = cfg.train
    started = time.perf_counter()
    if t_cfg.threads:
        torch.set_num_threads(t_cfg.threads)
    seed_everything(cfg.seed)
    # Cheap checks first: an unknown encoder, an image size it cannot take, a missing encoder
    # file or bad data must stop the run before any heavy work starts.
    check_model_config(cfg)
    loss_fn = build_loss(cfg.loss, multiclass=cfg.data.task == "multiclass")  # checks the loss's keys
    bank = _phrase_bank(cfg, saved)
    bundle = with_rehearsal(build_datasets(cfg.data, cfg.seed, val_max_cases=t_cfg.val_max_cases), cfg)
    run_dir = Path(resume) if resume is not None else _new_run_dir(cfg, info)
    if info.is_main:  # locked until train() returns; marked FAILED if anything below raises
        run_dir_hold.enter_context(hold_run_dir(run_dir))
    # Which data the checkpoints' model learnt from, by content (compare's overlap check).
    train_ids = set(bundle.split["train"])
    trained_cases = [case_identity(c) for c in bundle.cases if c.case_id in train_ids] if info.is_main else []
    if info.is_main and saved is None:
        write_run_records(run_dir, cfg, bundle.split, argv, info.world_size)
    elif info.is_main:
        save_config(cfg, run_dir / "config.yaml")  # with the --set changes resuming applied

    arch = get_architecture(cfg.model.arch)
    model = create_model_from_config(cfg).to(device)
    if init_from is not None:
        for warning in init_from_checkpoint(model, cfg, init_from, init_relabel):
            console.print(f"[yellow]warning:[/] {warning}")
    if saved is None:  # a resumed run has it in last.pt
        model.prepare(bundle.train)
    if info.is_main:
        counts = model.parameter_counts()
        console.print(
            f"[bold]{cfg.name}[/]: {arch.title(cfg.model)}, {len(bundle.train)} training / "
            f"{len(bundle.val or [])} validation items, trainable {counts['trainable']:,} of {counts['total']:,} "
            f"parameters ({counts['trainable_percent']}%), run dir {run_dir}"
        )
        if isinstance(bundle.train, RehearsalMix):
            console.print(f"rehearsing {len(bundle.train.source)} items of {len(bundle.split['rehearsed'])} cases "
                          f"(the training cases of {cfg.data.rehearse_from}) at {cfg.data.rehearse_share:.0%} of the draws")
        for note in model.score_notes():  # e.g. oracle prompts behind the validation score
            console.print(f"[yellow]note:[/] {note}")
    amp = [resolve_amp(t_cfg.amp, device, training_probe(model, cfg)) if info.is_main else None]
    if info.enabled:  # one measurement, and every rank computes in the same precision
        dist.broadcast_object_list(amp, src=0)
    amp_dtype = amp[0].dtype
    if info.is_main:
        console.print(amp[0].reason)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=t_cfg.lr, weight_decay=t_cfg.weight_decay)
    steps_per_epoch = _steps_per_epoch(cfg, len(bundle.train), info.world_size)
    total_steps = steps_per_epoch * t_cfg.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(t_cfg.warmup_steps, total_steps))

    samples_per_epoch = steps_per_epoch * t_cfg.batch_size * t_cfg.accumulate * info.world_size
    sampler = make_train_sampler(bundle.train, cfg.data, samples_per_epoch, cfg.seed, info.rank, info.world_size)
    # Text-prompted: each image with phrases of its structures; the sampler draws images as before.
    train_data = bundle.train if bank is None else PhraseSampleDataset(
        bundle.train, bank.train_ids(), cfg.text.phrases_per_image, cfg.seed)
    loader = DataLoader(
        train_data,
        batch_size=t_cfg.batch_size,
        sampler=sampler,
        num_workers=cfg.data.num_workers,
        drop_last=True,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
    )

    progress = TrainState()
    log = MetricLog(run_dir)
    # What the model's inputs look like, stored with it so inference can tell a far-off case.
    fingerprint = _fingerprint(bundle.train) if info.is_main else None
    average = WeightAverage(model, t_cfg.ema) if t_cfg.ema else None
    if saved is not None:
        model.load_trained_state_dict(saved["state_dict"], source=str(run_dir / "last.pt"))
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        # The optimiser kept the rate of the saved schedule; a run extended by --set train.epochs
        # must take its next step at the rate of the stretched one (identical when unchanged).
        for group, base, fn in zip(optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas):
            group["lr"] = base * fn(scheduler.last_epoch)
        progress = TrainState(**saved["progress"])
        if average is not None:
            if "ema" not in saved:
                raise CheckpointError(f"{run_dir / 'last.pt'} holds no weight average (train.ema); resume it without one")
            average.load_state(saved["ema"], source=f"{run_dir / 'last.pt'} (weight average)")
        _set_rng_state(saved["rng"])
        if info.is_main:
            log.truncate_after(progress.step)
            changed = [f"{k} {a} -> {b}" for k, (a, b) in config_differences(saved["config"], cfg.to_dict()).items()]
            console.print(f"resuming {run_dir} after epoch {progress.epoch} (step {progress.step})"
                          + (f"; applied {', '.join(changed)}" if changed else ""))

    net: torch.nn.Module = model
    if info.enabled:
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if t_cfg.compile:
        net = torch.compile(net)
    cache = None
    if t_cfg.cache_features and arch.caches_features and not model.encoder_trains and not cfg.data.augment.enabled:
        cache = FeatureCache(t_cfg.feature_cache_mb * 2**20, run_dir / f"feature_cache_rank{info.rank}")
    step = TrainStep(net, loss_fn, optimizer, params, device, amp_dtype, t_cfg.grad_clip, t_cfg.accumulate,
                     with_target=model.trains_with_target)
    phrase_table = None if bank is None else bank.embeddings.to(device)

    with _progress_bar(info) as bar:
        task = bar.add_task("train", total=total_steps, completed=progress.step, loss=float("nan"), ips=0.0)
        for epoch in range(progress.epoch, t_cfg.epochs):
            sampler.set_epoch(epoch)
            train_data.set_epoch(epoch)  # per-item augmentation (and phrase) seeds depend on it
            model.train()
            loss_sum, n_loss, t0, seen = 0.0, 0, time.perf_counter(), 0
            for i, batch in enumerate(loader):
                image = batch["image"].to(device, non_blocking=True)
                target = batch["mask"].to(device, non_blocking=True)
                features = None
                if cache is not None:
                    keys = list(zip(batch["case"], batch["slice"].tolist()))
                    features = partial(cache.features, model, image, keys)
                # text-prompted: the embeddings of the phrases drawn for each image (B, P, D)
                text = None if phrase_table is None else phrase_table[batch["phrase"].to(device)]
                loss = step.backward(image, target, features, text)
                loss_sum, n_loss, seen = loss_sum + loss, n_loss + 1, seen + len(image)
                if (i + 1) % t_cfg.accumulate:
                    continue
                step.update()
                scheduler.step()
                if average is not None:
                    average.update(model)
                progress.step += 1
                ips = seen * info.world_size / (time.perf_counter() - t0)
                bar.update(task, advance=1, loss=loss_sum / n_loss, ips=ips)
            mean_loss = all_reduce_mean(torch.tensor(loss_sum / max(1, n_loss)), info).item()
            progress.epoch = epoch + 1
            record: dict[str, Any] = {
                "kind": "train", "epoch": progress.epoch, "step": progress.step, "loss": mean_loss,
                "lr": scheduler.get_last_lr()[0], "images_per_s": seen * info.world_size / (time.perf_counter() - t0),
            }
            if info.is_main:
                log.append(record)
                # A plain line per epoch: the live bar is not drawn when output goes to a file.
                bar.console.print(f"epoch {progress.epoch}: train loss {mean_loss:.4f}, "
                                  f"{record['images_per_s']:.2f} img/s, lr {record['lr']:.2e}")
                _end_of_epoch(model, cfg, bundle, device, progress, optimizer, scheduler, run_dir, log, bar, bank,
                              average, fingerprint, trained_cases)
            barrier(info)
    if cache is not None:
        cache.clear()
    if info.is_main:
        test = _test(model, cfg, bundle, device, run_dir, log, bank) if bundle.test is not None else {}
        validated = bundle.val is not None
        # Without validation cases there is no best score: null, not the -1 the search starts from.
        best = {"best_" + t_cfg.metric: progress.best if validated else None,
                "best_epoch": progress.best_epoch if validated else None}
        if not validated:
            best["note"] = "no validation cases: best.pt is the last epoch, at threshold 0.5"
        write_json(run_dir / "summary.json", {**best, "epochs": progress.epoch, "steps": progress.step, **test,
                                             "trainable_parameters": model.parameter_counts()["trainable"],
                                             "wall_seconds": round(time.perf_counter() - started, 1),
                                             "threads": torch.get_num_threads(), "precision": amp[0].name})
        done = (f"best validation {t_cfg.metric} {progress.best:.4f} at epoch {progress.best_epoch}, "
                f"{_threshold_note(read_checkpoint(run_dir / 'best.pt')['metrics'])}" if validated else best["note"])
        console.print(f"done: {done}; {run_dir}")
    return run_dir


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


def _end_of_epoch(model: SegmentationModel, cfg: Config, bundle, device, progress: TrainState, optimizer, scheduler,
                  run_dir: Path, log: MetricLog, bar: Progress, bank: PhraseBank | None = None,
                  average: WeightAverage | None = None, fingerprint: dict | None = None,
                  trained_cases: list[dict] | None = None) -> None:
    """Validate (every ``val_every`` epochs and at the end), keep the best, write last.pt.

    Both checkpoints carry the training data's ``fingerprint`` (:mod:`s2unet.data.fingerprint`).

    With a weight average (``train.ema``) the average is validated and saved as ``best.pt``;
    ``last.pt`` keeps both, so a resumed run continues each. Both store ``trained_cases``, the
    identities of the training cases (:func:`~s2unet.data.case_identity`).
    """
    t_cfg = cfg.train
    # The fingerprint, the cases trained on and the phrase bank travel with the model.
    stored: dict[str, Any] = {"fingerprint": fingerprint, "trained_cases": list(trained_cases or [])}
    if bank is not None:
        stored["text"] = bank.to_payload()
    kept = {} if average is None else {"ema": average.state()}
    scored = model if average is None else average.model
    last_epoch = progress.epoch == t_cfg.epochs
    if bundle.val is None:
        # Without validation cases the latest model is the one to use.
        _save_best(model_payload(scored, cfg, 0.5, {}, epoch=progress.epoch, **stored), run_dir, cfg.name)
    elif progress.epoch % t_cfg.val_every == 0 or last_epoch:
        result = validate(scored, cfg, bundle.val, device, max_cases=t_cfg.val_max_cases, text=bank)
        score = result["summary"][t_cfg.metric]
        log.append({"kind": "val", "epoch": progress.epoch, "step": progress.step, **result["summary"]})
        bar.console.print(
            f"epoch {progress.epoch}: validation {t_cfg.metric} {score:.4f} ({_threshold_note(result['summary'])}, "
            f"{len(result['cases'])} cases{_empty_reference_note(result['summary'], len(result['cases']), t_cfg.metric)})"
        )
        if score > progress.best:
            progress.best, progress.best_epoch = score, progress.epoch
            _save_best(model_payload(scored, cfg, result["threshold"], result["summary"], epoch=progress.epoch,
                                     validation_cases=result["cases"], calibration=result["calibration"].to_payload(),
                                     **stored), run_dir, cfg.name)
        log.plot(t_cfg.metric)
    atomic_save(
        model_payload(model, cfg, 0.5, {}, optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
                      progress=vars(progress).copy(), rng=_rng_state(), **stored, **kept),
        run_dir / "last.pt",
    )


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
def _test(model: SegmentationModel, cfg: Config, bundle, device, run_dir: Path, log: MetricLog,
          bank: PhraseBank | None = None) -> dict[str, Any]:
    """Score ``best.pt`` on the test split at its own (validation-tuned) threshold and calibration.

    With ``data.split.mode: group`` the test cases come from sources never trained on, so this
    is the cross-source score. Logged as a ``test`` record and returned for ``summary.json``.
    """
    best = read_checkpoint(run_dir / "best.pt")
    model.load_trained_state_dict(best["state_dict"], source=str(run_dir / "best.pt"))
    result = validate(model, cfg, bundle.test, device, threshold=best["threshold"], text=bank,
                      calibration=Calibration.from_payload(best.get("calibration"), str(run_dir / "best.pt")))
    log.append({"kind": "test", "epoch": best.get("epoch"), **result["summary"]})
    score = result["summary"][cfg.train.metric]
    console.print(f"test {cfg.train.metric} {score:.4f} on {len(result['cases'])} cases (threshold {result['threshold']:.2f})")
    return {"test_" + cfg.train.metric: score, "test_threshold": result["threshold"], "test_cases": result["cases"]}


def _progress_bar(info: DistInfo) -> Progress:
    return Progress(
        TextColumn("[bold blue]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}"), TextColumn("{task.fields[ips]:.1f} img/s"),
        TimeElapsedColumn(), TimeRemainingColumn(), console=console, disable=not info.is_main,
    )
