"""``--reference`` (s2unet against the SAM2-UNet reference, in turns in one process) and
``--inference-precision`` (what ``--precision auto`` picks on this machine, and the measured
bf16 / fp32 time ratio of inference)."""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any, Callable

import torch

from bench.sam2unet_reference import SAM2UNetReference, reference_loss
from bench.speed_probes import median, paired_ratio
from bench.speed_report import Report, markdown_table
from bench.speed_runner import run_isolated

PRECISION_ENCODERS = ("sam2.1_hiera_tiny", "mobilesam_tinyvit")


def _timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _s2unet(encoder: str, size: int, weights: str):
    from s2unet.config import load_config
    from s2unet.models import create_model_from_config

    cfg = load_config(None, [f"model.weights={weights}", f"model.encoder={encoder}", f"data.image_size={size}"])
    return cfg, create_model_from_config(cfg)


def reference_child(size: int, batch: int, infer_batch: int, rounds: int, threads: int) -> dict[str, Any]:
    """Training steps and inference of s2unet (Hiera-T, stage adapters, its trainer's TrainStep)
    and of the SAM2-UNet reference, A, B, A, B ... after one warm-up each."""
    if threads:
        torch.set_num_threads(threads)
    from s2unet.engine.step import TrainStep
    from s2unet.losses import build_loss

    cfg, ours = _s2unet("sam2.1_hiera_tiny", size, "random")
    ref = SAM2UNetReference()
    x, target = torch.rand(batch, 3, size, size), (torch.rand(batch, 1, size, size) > 0.5).float()
    xi = torch.rand(infer_batch, 3, size, size)
    steps = {}
    for name, model, loss in (("s2unet", ours, build_loss(cfg.loss, multiclass=False)), ("reference", ref, reference_loss)):
        params = [p for p in model.parameters() if p.requires_grad]
        steps[name] = TrainStep(model.train(), loss, torch.optim.AdamW(params, lr=1e-4), params, torch.device("cpu"),
                                None, 0.0)

    def infer(name: str) -> Callable[[], Any]:
        model = ours if name == "s2unet" else ref
        return lambda: model.predict_logits(xi) if name == "s2unet" else model(xi, all_heads=False)

    times: dict[str, dict[str, list[float]]] = {"train": {"s2unet": [], "reference": []}, "infer": {"s2unet": [], "reference": []}}
    for i in range(rounds + 1):
        for name in ("s2unet", "reference"):
            t = _timed(lambda: steps[name](x, target))
            if i:
                times["train"][name].append(t)
    ours.merge_lora()
    ours.eval(), ref.eval()
    with torch.inference_mode():
        for i in range(rounds + 1):
            for name in ("s2unet", "reference"):
                t = _timed(infer(name))
                if i:
                    times["infer"][name].append(t)
    params = {n: sum(p.numel() for p in m.parameters() if p.requires_grad) for n, m in (("s2unet", ours), ("reference", ref))}
    return {"threads": torch.get_num_threads(), "times_s": times, "trainable_params": params,
            "ratio": {phase: paired_ratio(t["s2unet"], t["reference"]) for phase, t in times.items()},
            "median_s": {phase: {n: median(v) for n, v in t.items()} for phase, t in times.items()}}


def run_reference(args: argparse.Namespace) -> None:
    """``--reference``: s2unet's time over the SAM2-UNet reference's, training and inference."""
    report = Report("reference", args)
    res = run_isolated(reference_child, args.size, args.batch, args.infer_batch, max(2, args.repeats), args.threads,
                       isolate=not args.no_isolate)
    report.data["results"] = res
    rows = [[phase, f"{res['median_s'][phase]['s2unet']:.3f} s", f"{res['median_s'][phase]['reference']:.3f} s",
             res["ratio"][phase]] for phase in ("train", "infer")]
    md = markdown_table(["phase", "s2unet (Hiera-T, stage adapters)", "SAM2-UNet reference", "s2unet / reference (median of paired rounds)"], rows) + (
        f"\n\n{args.size} px, training batch {args.batch}, inference batch {args.infer_batch}, "
        f"{res['threads']} threads, fp32, random weights; trainable parameters s2unet "
        f"{res['trainable_params']['s2unet']:,}, reference {res['trainable_params']['reference']:,}. The two models take "
        "turns step by step (`bench/sam2unet_reference.py` is the reference, written from arXiv 2408.08870)."
    )
    report.finish(Path(args.out), "reference", md)


def precision_child(size: int, batch: int, rounds: int, threads: int, weights: str) -> dict[str, Any]:
    """Per encoder: ``--precision auto``'s choice (fresh, not from the cache) and an interleaved
    fp32 / bf16 timing of ``Predictor.predict_batch``."""
    if threads:
        torch.set_num_threads(threads)
    import os
    import tempfile

    import numpy as np

    from s2unet.predict import Predictor
    from s2unet.predict.precision import mask_dice, probe_input

    os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp()  # a fresh measurement, not this machine's cached one
    out: dict[str, Any] = {"threads": torch.get_num_threads()}
    inputs = probe_input(batch, size, seed=1).numpy()  # another input than the probe's (seed 0)
    for encoder in PRECISION_ENCODERS:
        cfg, model = _s2unet(encoder, size, weights)
        model.merge_lora()
        t0 = time.perf_counter()
        choice = Predictor(model, cfg, batch_size=batch).precision
        decided_s = time.perf_counter() - t0
        predictors = {name: Predictor(model, cfg, batch_size=batch, precision=name) for name in ("fp32", "bf16")}
        times: dict[str, list[float]] = {"fp32": [], "bf16": []}
        masks: dict[str, np.ndarray] = {}
        for i in range(rounds + 1):
            for name, p in predictors.items():
                t0 = time.perf_counter()
                masks[name] = p.binarize(p.predict_batch(inputs))
                if i:
                    times[name].append(time.perf_counter() - t0)
        out[encoder] = {"auto": choice.to_payload(), "decision_s": decided_s, "times_s": times,
                        "bf16_over_fp32": 1.0 / paired_ratio(times["fp32"], times["bf16"]),
                        "dice_other_input": mask_dice(masks["fp32"], masks["bf16"])}
    return out


def run_inference_precision(args: argparse.Namespace) -> None:
    """``--inference-precision``: the choice and the bf16 / fp32 time ratio per encoder."""
    report = Report("inference_precision", args)
    res = run_isolated(precision_child, args.amp_size, args.infer_batch, max(2, args.repeats), args.threads,
                       args.weights, isolate=not args.no_isolate)
    report.data["results"] = res
    rows = []
    for encoder in PRECISION_ENCODERS:
        r = res[encoder]
        rows.append([encoder, f"{median(r['times_s']['fp32']):.3f} s", f"{median(r['times_s']['bf16']):.3f} s",
                     r["bf16_over_fp32"], f"{r['auto']['measured']['dice']:.4f} / {r['dice_other_input']:.4f}",
                     f"**{r['auto']['precision']}** ({r['decision_s']:.1f} s)"])
    md = markdown_table(["encoder", "fp32 predict_batch", "bf16 predict_batch", "bf16 / fp32 time",
                         "mask Dice bf16 vs fp32 (probe / other input)", "auto picks"], rows) + (
        f"\n\n{args.amp_size} px (`--amp-size`), batch {args.infer_batch}, {res['threads']} threads, weights "
        f"`{args.weights}`; fp32 and bf16 `Predictor.predict_batch` in turns, median of paired rounds. "
        "auto: the fresh (uncached) measurement `--precision auto` decides by.\n\n"
        + "\n".join(f"- {enc}: {res[enc]['auto']['reason']}" for enc in PRECISION_ENCODERS)
    )
    report.finish(Path(args.out), "inference_precision", md)
