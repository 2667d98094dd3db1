"""Command-line entry points, one job each: train, infer, evaluate, export, compare, label.

``python train.py ...`` and ``python infer.py ...`` are thin aliases of
``python -m s2unet train ...`` and ``python -m s2unet infer ...``.
"""
from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

from . import __version__


def _train_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML file; its keys override the defaults (see configs/)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config key, e.g. --set train.epochs=2 (repeatable; wins over the YAML)")
    p.add_argument("--resume", metavar="RUN_DIR",
                   help="continue a run from RUN_DIR/last.pt with its own config (--set may change only "
                        "train.epochs and a few runtime keys; see the README)")
    p.add_argument("--check-only", action="store_true", help="resolve the config, check the data, and stop")
    p.add_argument("--init-from", metavar="CHECKPOINT",
                   help="fine-tune: start from the trained tensors of CHECKPOINT (e.g. RUN/best.pt) with a fresh schedule")
    p.add_argument("--init-relabel", action="store_true",
                   help="--init-from a checkpoint whose label names differ (its channels are re-learnt as this run's)")


def _threshold(text: str) -> float:
    """A ``--threshold`` value; its range, (0, 1), is checked with the other arguments."""
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number; give one between 0 and 1, e.g. 0.5") from None


def _infer_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="best.pt of a training run, or a model.onnx from `s2unet export` (CPU)")
    p.add_argument("--input", required=True, nargs="+", help="volume(s) (NIfTI, MHA/NRRD, a DICOM series folder), 2D image(s) (PNG/JPEG/TIFF/DICOM), or a folder of those")
    p.add_argument("--output", required=True, help="output directory")
    p.add_argument("--gt", help="ground truth (file or folder, paired by case name) to evaluate against")
    p.add_argument("--lung", help="lung mask(s): keep only lesions inside, report the affected share")
    p.add_argument("--lung-checkpoint", help="a lung-segmentation checkpoint to predict the lung mask")
    p.add_argument("--threshold", type=_threshold, help="binarisation threshold (default: the one tuned in training)")
    p.add_argument("--min-size", type=int, default=0, help="drop connected components smaller than this (voxels)")
    p.add_argument("--tta", action="store_true", help="average with the horizontally flipped prediction")
    p.add_argument("--no-postprocess", action="store_true",
                   help="skip the checkpoint's post-processing (postprocess.keep_largest / fill_holes)")
    p.add_argument("--keep-largest", type=int, nargs="+", metavar="N",
                   help="keep the N largest components (one N for all labels or one per label); overrides the checkpoint")
    p.add_argument("--fill-holes", action="store_true", help="fill holes in the prediction (per slice in volumes)")
    p.add_argument("--harmonise-intensity", default="none", metavar="none|histogram|clahe",
                   help="match each case's intensities to the training data's (histogram: its quantiles; clahe: CLAHE)")
    p.add_argument("--harmonise-fov", default="none", metavar="none|body|lungs",
                   help="crop each case around its body (or lungs) so the field of view matches the training data's")
    p.add_argument("--probabilities", action="store_true", help="also write probability maps")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                   help="auto: bf16 autocast only where measured >= 1.15x faster with masks agreeing with fp32 "
                        "(Dice >= 0.995) for this model on this machine (cached); fp32 / bf16 force it")
    p.add_argument("--overwrite", action="store_true", help="replace earlier results in --output")
    p.add_argument("--text", action="append", metavar="PHRASE",
                   help="text-prompted checkpoints: the structure to segment, e.g. --text \"left clavicle\" "
                        "(repeatable: one output per phrase; default: every structure the model knows)")


def _evaluate_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pred", required=True, help="folder of predictions (<case>_pred.nii.gz, .mha, .nrrd or .png; "
                   "or nnU-Net's <case>.nii.gz ...)")
    p.add_argument("--gt", required=True, help="folder of ground truth, same case names")
    p.add_argument("--output", help="where to write the CSV/JSON (default: --pred)")
    p.add_argument("--overwrite", action="store_true", help="replace the results of an earlier evaluation in --output")


def _compare_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="comparison YAML (configs/compare_*.yaml)")
    p.add_argument("--output", help="output directory (default: runs/<config name>)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")


def _label_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--images", required=True, help="an image or volume file or a DICOM series folder, or a folder of them "
                   "(PNG/JPEG/TIFF/DICOM/NIfTI/MHA/NRRD)")
    p.add_argument("--out", default="labels", help="where masks, log and autosave go (default: ./labels)")
    p.add_argument("--labels", help="comma-separated label names, one layer each, saved to OUT/masks/<name>")
    p.add_argument("--config", help="take the labels (names and folders) from this training config instead")
    p.add_argument("--checkpoint", help="an s2unet best.pt whose prediction is the draft")
    p.add_argument("--prompted", default="mobilesam",
                   help="prompted model for clicks and boxes: mobilesam, litemedsam, sam2.1_hiera_tiny... or none")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback only)")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--allow-remote", action="store_true", help="confirm binding to a non-loopback --host")
    p.add_argument("--token", help="access token (made up when binding remotely without one)")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's)")


def _export_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="best.pt of a training run")
    p.add_argument("--format", required=True, choices=["onnx", "exported-program"],
                   help="onnx (runs with onnxruntime; infer.py --checkpoint FILE.onnx) or a torch.export program (.pt2)")
    p.add_argument("--output", required=True, help="the file to write")


def _run_train(args: argparse.Namespace) -> None:
    from .config import ConfigError, load_config
    from .devices import resolve_device
    from .engine.resume import RESUME_KEYS, load_resume
    from .engine.trainer import Trainer, train

    if args.resume is not None and args.config is not None:
        raise ConfigError(
            f"--resume {args.resume} continues that run with its own config.yaml; --config cannot change it "
            f"(--set may change {', '.join(RESUME_KEYS)}; start a new run for anything else)"
        )
    if args.check_only:
        # The same checks training runs first (it also resolves the device), without the work.
        point = load_resume(args.resume, args.overrides) if args.resume else None
        cfg = point.config if point else load_config(args.config, args.overrides)
        trainer = Trainer(cfg, resolve_device(cfg.train.device, "train.device"), saved=point.checkpoint if point else None)
        trainer.preflight()
        bundle = trainer.bundle
        print(f"config and data OK: {len(bundle.cases)} cases, split "
              + ", ".join(f"{k} {len(v)}" for k, v in bundle.split.items()))
        return
    if args.resume is not None:
        train(None, resume=args.resume, argv=sys.argv, resume_overrides=args.overrides, init_from=args.init_from,
              init_relabel=args.init_relabel)
    else:
        train(load_config(args.config, args.overrides), argv=sys.argv, init_from=args.init_from,
              init_relabel=args.init_relabel)


def _run_infer(args: argparse.Namespace) -> None:
    from .inference.run import InferenceOptions, run_inference

    options = InferenceOptions(
        gt=args.gt, lung=args.lung, lung_checkpoint=args.lung_checkpoint, overwrite=args.overwrite,
        probabilities=args.probabilities, tta=args.tta, min_size=args.min_size, batch_size=args.batch_size,
        device=args.device, threshold=args.threshold, no_postprocess=args.no_postprocess,
        keep_largest=args.keep_largest, fill_holes=args.fill_holes, text=args.text,
        harmonise_intensity=args.harmonise_intensity, harmonise_fov=args.harmonise_fov, precision=args.precision,
    )
    run_inference(args.checkpoint, args.input, args.output, options)


def _run_evaluate(args: argparse.Namespace) -> None:
    from .inference.evaluate import evaluate

    evaluate(args.pred, args.gt, args.output, overwrite=args.overwrite)


def _run_export(args: argparse.Namespace) -> None:
    from .inference.export import export_model

    print(f"wrote {export_model(args.checkpoint, args.format, args.output)}")


def _run_compare(args: argparse.Namespace) -> None:
    from .baselines.compare import run_compare

    run_compare(args.config, args.output, overrides=args.overrides)


def _run_label(args: argparse.Namespace) -> None:
    import torch

    from .app import AppError, build_state, serve

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        state = build_state(args.images, args.out, args.labels.split(",") if args.labels else None,
                            config=args.config, checkpoint=args.checkpoint, prompted=None if args.prompted == "none" else args.prompted)
        serve(state, args.host, args.port, args.token, args.allow_remote)
    except AppError as exc:  # the app's own start-up errors, reported like main() reports the others
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


COMMANDS: dict[str, tuple[str, Callable, Callable]] = {
    "train": ("train a model from a YAML config", _train_parser, _run_train),
    "infer": ("segment CT volumes or X-rays with a trained checkpoint", _infer_parser, _run_infer),
    "evaluate": ("score predictions against ground truth", _evaluate_parser, _run_evaluate),
    "export": ("export a checkpoint's inference graph (ONNX, torch.export)", _export_parser, _run_export),
    "compare": ("run s2unet, CNN and prompted-SAM baselines on the same cases", _compare_parser, _run_compare),
    "label": ("label and correct masks in the browser (local web app)", _label_parser, _run_label),
}


def main(argv: Sequence[str] | None = None, command: str | None = None) -> int:
    """Parse and run one command; user errors print one clear line and exit 2.

    Args:
        argv: arguments (default: sys.argv[1:]).
        command: a fixed command (``train.py`` passes "train"), else the first argument.
    """
    from .runtime import keep_freed_memory, prefer_passive_openmp

    prefer_passive_openmp()  # before anything below loads torch
    argv = list(sys.argv[1:] if argv is None else argv)
    if command is None:
        parser = argparse.ArgumentParser(prog="s2unet", description=__doc__)
        parser.add_argument("--version", action="version", version=f"s2unet {__version__}")
        sub = parser.add_subparsers(dest="command", required=True)
        for name, (help_text, add_args, _) in COMMANDS.items():
            add_args(sub.add_parser(name, help=help_text))
        args = parser.parse_args(argv)
    else:
        parser = argparse.ArgumentParser(prog=f"{command}.py", description=COMMANDS[command][0])
        COMMANDS[command][1](parser)
        args = parser.parse_args(argv)
        args.command = command
    keep_freed_memory()
    # Imported after parsing, so --help and --version answer without loading torch.
    from .config import ConfigError
    from .data import DataError
    from .io import WRITE_ERRNOS, OutputError
    from .text import UnknownPhraseError
    from .weights import CheckpointError
    try:
        COMMANDS[args.command][2](args)
    except (ConfigError, DataError, CheckpointError, OutputError, UnknownPhraseError, FileExistsError,
            FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.errno not in WRITE_ERRNOS:  # anything else is a bug or a broken machine: keep the traceback
            raise
        # Full disk, read-only folder, no permission: the file and the reason, one line.
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: {where}{exc.strerror}", file=sys.stderr)
        return 2
    return 0
