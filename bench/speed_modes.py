"""The speed benchmark's modes: the grid, ``--compare``, ``--placements``, ``--volume`` and
``--amp-check``, each measuring with :func:`bench.speed_runner.measure_cases` and writing a report."""
from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from bench.speed_probes import MatmulProbe, matmul_rate, paired_ratio, peak_rss_bytes, ratio, reset_peak_rss
from bench.speed_report import Report, add_floors, fmt_params, gflop_cell, gib, load_average, markdown_table, pair_cell
from bench.speed_runner import PHASES, Case, Settings, make_case, measure_cases, measure_isolated, parse_compare_arg, run_isolated

GRID_ENCODERS = ("sam2.1_hiera_tiny", "sam2.1_hiera_small", "litemedsam_tinyvit", "mobilesam_tinyvit")
GRID_SIZES = (256, 352, 512)
# The slowest combinations, left out of the default grid so that it finishes in < 10 minutes on
# a 2-core CPU; ``--full`` runs them. Values say why.
SLOW_COMBOS: dict[tuple[str, int], str] = {
    ("sam2.1_hiera_small", 512): "the slowest Hiera combination, ~1.4x Hiera-T at 512 px (itself the "
    "grid's second slowest row)",
    ("litemedsam_tinyvit", 352): "LiteMedSAM's stride-1 patch embedding keeps its first stage at full "
    "resolution: its 256 px row is already the grid's slowest (~2 min on the shared 2-core machine) and "
    "352 px costs ~2x that; its weights are for 256 px",
    ("litemedsam_tinyvit", 512): "as LiteMedSAM at 352 px, ~4x the 256 px cost",
}
UNET_LABEL = "monai UNet (CNN ref)"
PLACEMENTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("stage adapters", ("model.adapter.placement=stage",)),
    ("block adapters", ("model.adapter.placement=block",)),
    ("attention LoRA", ("model.adapter.placement=none", "model.attention_lora.enabled=true")),
    ("decoder only", ("model.adapter.placement=none",)),
)
PLACEMENT_TARGET_GIB = 6.0
VOLUME_TARGET_S = 30.0


# ------------------------------------------------------------------------------ modes
def base_overrides(args: argparse.Namespace) -> list[str]:
    """Overrides every configuration starts from: speed-measurement weights and batch sizes."""
    return [f"model.weights={args.weights}", f"train.batch_size={args.batch}", f"bench.infer_batch={args.infer_batch}"]


def settings_from(args: argparse.Namespace, budget: float) -> Settings:
    return Settings(warmup=args.warmup, repeats=args.repeats, min_repeats=min(2, args.repeats),
                    phase_budget_s=budget, device=args.device, threads=args.threads)


def grid_cases(args: argparse.Namespace) -> tuple[list[Case], list[str]]:
    """The grid's configurations and the notes on what it skips."""
    encoders = args.encoders.split(",") if args.encoders else list(GRID_ENCODERS)
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else list(GRID_SIZES)
    base = base_overrides(args)
    cases, notes = [], []
    for enc in encoders:
        for size in sizes:
            if (enc, size) in SLOW_COMBOS and not args.full:
                notes.append(f"skipped {enc} at {size} px (run with --full): {SLOW_COMBOS[(enc, size)]}")
                continue
            cases.append(make_case(f"{enc}", [f"model.encoder={enc}", f"data.image_size={size}"], base))
    if not args.no_unet:
        for size in sizes:
            cases.append(make_case(UNET_LABEL, ["model.arch=unet", f"data.image_size={size}"], base))
    return cases, notes


def run_grid(args: argparse.Namespace) -> None:
    """Default mode: every configuration in its own process; table of speed, floor and memory."""
    report = Report("grid", args)
    cases, notes = grid_cases(args)
    report.data["notes"] += notes
    report.floor(args.device, not args.no_isolate, args.threads)
    results = []
    for case in cases:
        size = dict(o.split("=", 1) for o in case.overrides).get("data.image_size")
        print(f"[{time.strftime('%H:%M:%S')}] {case.label} @ {size} px (load {load_average()})", flush=True)
        results.extend(measure_isolated([case], settings_from(args, args.phase_budget), not args.no_isolate))
    gflops = report.machine_rate(report.floor(args.device, not args.no_isolate, args.threads), results)
    add_floors(results, gflops)
    report.data["results"] = results
    rows = []
    for r in results:
        if "error" in r:
            rows.append([r["label"], "-", "error: " + r["error"].splitlines()[-1][:80]] + ["-"] * 9)
            continue
        t, i = r["phases"].get("train", {}), r["phases"].get("infer", {})
        rows.append([
            r["label"], r["image_size"], f"{t.get('median_step_s', 0):.2f} (b{r['train_batch']})",
            t.get("images_per_s"), pair_cell(t.get("x_floor"), t.get("x_floor_at_load")),
            i.get("images_per_s"), pair_cell(i.get("x_floor"), i.get("x_floor_at_load")),
            pair_cell(gib(t.get("peak_rss_bytes")), gib(i.get("peak_rss_bytes"))), fmt_params(r["params"]),
            gflop_cell(i.get("encoder_flops_per_image")), gflop_cell(i.get("flops_per_image")),
            gflop_cell(t.get("flops_per_image"), macs=False),
        ])
    header = ["model", "px", "train s/step (batch)", "train img/s", "train x floor (machine / at load)",
              "infer slices/s", "infer x floor (machine / at load)", "peak RSS GiB (train / infer)",
              "trainable / total params", "encoder GMAC/img", "model GMAC/img", "train GFLOP/img"]
    md = markdown_table(header, rows)
    md += "\n\n" + "\n".join(f"- {n}" for n in [
        f"{args.repeats} timed repeats (median; fewer, >= 2, when a phase exceeded {args.phase_budget:.0f} s), "
        f"{args.warmup} warm-up step(s) after an untimed FLOP-counting step; training batch {args.batch}, "
        f"inference batch {args.infer_batch}; model.weights={args.weights} (same compute as real weights).",
        *notes,
    ])
    report.finish(Path(args.out), "speed", md)


def run_compare(args: argparse.Namespace) -> None:
    """Several configurations interleaved in one process; ratios of medians to the first."""
    report = Report("compare", args)
    base = base_overrides(args) + [f"data.image_size={args.size}"] + ([f"model.encoder={args.encoder}"] if args.encoder else [])
    phases = tuple(p for p in PHASES if p in args.phases.split(","))
    cases = [make_case(f"{chr(65 + k)}: {spec or '(defaults)'}", parse_compare_arg(spec), base, phases)
             for k, spec in enumerate(args.compare)]
    report.floor(args.device, not args.no_isolate, args.threads)
    results = measure_isolated(cases, settings_from(args, 0.0), not args.no_isolate)
    gflops = report.machine_rate(report.floor(args.device, not args.no_isolate, args.threads), results)
    add_floors(results, gflops)
    report.data["results"] = results
    report.data["notes"].append("interleaved in one process: peak memory is not per configuration and is not reported")
    if any("error" in r for r in results):
        md = "\n".join(f"- {r['label']}: {r.get('error', 'ok')}" for r in results)
        report.finish(Path(args.out), f"compare{('_' + args.tag) if args.tag else ''}", md)
        return
    ref = results[0]["phases"]
    rows = []
    for r in results:
        row: list[Any] = [r["label"]]
        for phase in phases:
            p = r["phases"][phase]
            pair = paired_ratio(p["times_s"], ref[phase]["times_s"])
            row += [p["median_step_s"], p["images_per_s"], ratio(p["median_step_s"], ref[phase]["median_step_s"]), pair,
                    pair_cell(p.get("x_floor"), p.get("x_floor_at_load"))]
        row.append(fmt_params(r["params"]))
        rows.append(row)
    header = ["configuration"]
    for phase in phases:
        header += [f"{phase} s/step", f"{phase} img/s", f"{phase} time / A (medians)",
                   f"{phase} time / A (median of paired)", f"{phase} x floor (machine / at load)"]
    header.append("trainable / total params")
    first = results[0]
    md = markdown_table(header, rows) + (
        f"\n\n- {first['image_size']} px, training batch {first['train_batch']}, inference batch {first['infer_batch']}, "
        f"{args.repeats} interleaved repeats (A, B, A, B...) after {args.warmup} warm-up step(s); "
        "< 1 means faster than A. The paired column is the median of per-round ratios (robust to slow drifts in load)."
    )
    warm = [f"{r['label']}: first {phase} step(s) {', '.join(f'{s:.2f}' for s in r['phases'][phase]['warmup_s'])} s"
            for r in results for phase in phases if r["knobs"]["compile"]]
    if warm:
        md += "\n- compile warm-up (includes compilation): " + "; ".join(warm)
    report.finish(Path(args.out), f"compare{('_' + args.tag) if args.tag else ''}", md)


def run_placements(args: argparse.Namespace) -> None:
    """Adapter placement trade-off at Hiera-T, 352 px, batch 8 training.

    Two passes, each with the one measuring function: every placement alone in a fresh process
    (its peak memory, whether the encoder ran with autograd; one timed step), then all of them
    interleaved in one process for the step times and their ratios to stage adapters.
    """
    report = Report("placements", args)
    base = [f"model.weights={args.weights}", "model.encoder=sam2.1_hiera_tiny", f"data.image_size={args.size}",
            f"train.batch_size={args.placement_batch}"]
    cases = [make_case(label, ov, base, phases=("train",)) for label, ov in PLACEMENTS]
    report.floor(args.device, not args.no_isolate, args.threads)
    alone = []
    memory_settings = dataclasses.replace(settings_from(args, 0.0), warmup=0, repeats=1, min_repeats=1)
    for case in cases:
        print(f"[{time.strftime('%H:%M:%S')}] {case.label} alone, for memory (load {load_average()})", flush=True)
        alone.extend(measure_isolated([case], memory_settings, not args.no_isolate))
    print(f"[{time.strftime('%H:%M:%S')}] all placements interleaved, for time (load {load_average()})", flush=True)
    together = measure_isolated(cases, settings_from(args, 0.0), not args.no_isolate)
    gflops = report.machine_rate(report.floor(args.device, not args.no_isolate, args.threads), alone, together)
    add_floors(alone, gflops)
    add_floors(together, gflops)
    report.data["results"] = {"alone": alone, "interleaved": together}
    ref = together[0].get("phases", {}).get("train") if "error" not in together[0] else None
    rows = []
    for mem, tim in zip(alone, together):
        if "error" in mem or "error" in tim:
            rows.append([mem["label"], "error: " + (mem.get("error") or tim["error"]).splitlines()[-1][:80]] + ["-"] * 7)
            continue
        m, t = mem["phases"]["train"], tim["phases"]["train"]
        peak = gib(m["peak_rss_bytes"])
        rows.append([
            mem["label"], fmt_params(mem["params"]), t["median_step_s"], t["images_per_s"],
            paired_ratio(t["times_s"], ref["times_s"]) if ref else None,
            pair_cell(t["x_floor"], t["x_floor_at_load"]), peak,
            None if peak is None else peak < PLACEMENT_TARGET_GIB, m.get("encoder_autograd"),
        ])
    header = ["placement", "trainable / total params", f"train s/step (batch {args.placement_batch})", "img/s",
              "time / stage", "x floor (machine / at load)", "peak RSS GiB", f"< {PLACEMENT_TARGET_GIB:.0f} GiB",
              "encoder autograd"]
    md = markdown_table(header, rows) + (
        f"\n\n- Hiera-T (SAM2.1) at {args.size} px, batch {args.placement_batch}, forward + backward through the "
        "three deep-supervision heads + AdamW step.\n"
        f"- Times: the four placements interleaved in one process (A, B, C, D, A, ...), {args.repeats} rounds after "
        f"{args.warmup} warm-up round(s); time / stage is the median of per-round ratios.\n"
        "- Peak RSS: each placement alone in a fresh process (its training only; Python, torch and imports "
        "included, about 0.6 GiB).\n"
        "- encoder autograd: whether the encoder's outputs carried autograd history in training; decoder-only "
        "must say no (S2UNet.features runs the frozen encoder under no_grad)."
    )
    report.finish(Path(args.out), "placements", md)


# ------------------------------------------------------------------------------ end-to-end volume
def synthetic_volume(path: Path, slices: int = 100, size: int = 256, seed: int = 0) -> None:
    """A uint8 CT-like NIfTI (x, y, slice): a bright body ellipse, dark lungs and noise."""
    import nibabel as nib
    import numpy as np

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size - 0.5
    body = (xx / 0.45) ** 2 + (yy / 0.35) ** 2 < 1
    lungs = ((np.abs(xx) - 0.18) / 0.13) ** 2 + (yy / 0.22) ** 2 < 1
    base = np.where(body, 150, 10) - np.where(lungs, 110, 0)
    vol = np.empty((size, size, slices), dtype=np.uint8)
    for k in range(slices):
        vol[:, :, k] = np.clip(base.T + rng.normal(0, 12, (size, size)), 0, 255).astype(np.uint8)
    nib.save(nib.Nifti1Image(vol, np.eye(4)), str(path))


def volume_child(encoder: str, weights: str, slices: int, batch: int, runs: int, threads: int) -> dict[str, Any]:
    """Write a synthetic volume and a random-weight checkpoint, then time ``run_inference``."""
    if threads:
        torch.set_num_threads(threads)
    from s2unet.config import load_config
    from s2unet.models.checkpoint import atomic_save, model_payload
    from s2unet.inference.run import InferenceOptions, run_inference
    from s2unet.models import create_model_from_config

    out: dict[str, Any] = {"encoder": encoder, "slices": slices, "batch_size": batch, "threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory(prefix="s2unet_bench_") as tmp:
        root = Path(tmp)
        image = root / "ct_bench.nii.gz"
        synthetic_volume(image, slices)
        cfg = load_config(None, [f"model.encoder={encoder}", f"model.weights={weights}", "data.kind=volume",
                                 "data.image_size=256", "data.labels=[masks_infection]"])
        ckpt = root / "best.pt"
        atomic_save(model_payload(create_model_from_config(cfg), cfg, 0.5, {}), ckpt)
        out["runs"] = []
        probe = MatmulProbe(torch.device("cpu"))
        for k in range(runs):
            for _ in range(3):
                probe.sample()
            reset_peak_rss()
            t0 = time.perf_counter()
            summary = run_inference(ckpt, image, root / "out", InferenceOptions(overwrite=k > 0, batch_size=batch, show_progress=False))
            wall = time.perf_counter() - t0
            first = len(probe.times) - 3
            for _ in range(3):
                probe.sample()  # before and after the run: the machine's rate under the load it ran with
            written = root / "out" / "ct_bench_pred.nii.gz"
            out["runs"].append({
                "wall_s": wall, "seconds_predict": summary["seconds_predict"], "seconds_total": summary["seconds_total"],
                "slices_per_s_predict": summary["slices_per_second"], "slices_per_s_end_to_end": slices / wall,
                "prediction_written": written.is_file(), "peak_rss_bytes": peak_rss_bytes(),
                "matmul_gflops_around": probe.gflops(probe.times[first:]),
            })
    return out


def run_volume(args: argparse.Namespace) -> None:
    """``--volume``: read -> written NIfTI through the inference entry point, Hiera-T."""
    report = Report("volume", args)
    print(f"[{time.strftime('%H:%M:%S')}] volume: {args.volume_slices} slices x 256^2 through run_inference", flush=True)
    res = run_isolated(volume_child, args.volume_encoder, args.weights, args.volume_slices, args.volume_batch,
                       args.volume_runs, args.threads, isolate=not args.no_isolate)
    report.data["results"] = res
    rows = []
    for k, r in enumerate(res["runs"]):
        # The model part is ~1.4x its matmul floor (speed.md), so it scales with the matmul rate;
        # the rest (reading, post-processing, writing) is left as measured.
        at = r["matmul_gflops_around"]
        scaled = r["wall_s"] - r["seconds_predict"] * (1 - at / args.reference_gflops) if at else None
        r["wall_s_scaled_to_reference"] = scaled
        rows.append([f"run {k + 1}" + (" (first)" if k == 0 else ""), r["wall_s"], r["slices_per_s_end_to_end"],
                     r["seconds_predict"], r["slices_per_s_predict"], gib(r["peak_rss_bytes"]),
                     r["wall_s"] < VOLUME_TARGET_S, r["prediction_written"], at, scaled])
    header = ["run", "read -> written NIfTI s", "slices/s end-to-end", "model s (predict_volume)", "slices/s model",
              "peak RSS GiB", f"< {VOLUME_TARGET_S:.0f} s", "NIfTI written", "matmul GFLOP/s around the run",
              f"wall s if matmul ran at {args.reference_gflops:.0f} GFLOP/s"]
    md = markdown_table(header, rows) + (
        f"\n\n- `s2unet.inference.run.run_inference` on a synthetic {res['slices']}-slice 256 x 256 uint8 NIfTI with a "
        f"{res['encoder']} checkpoint (random weights, stage adapters), batch {res['batch_size']}, {res['threads']} threads; "
        "the wall time covers checkpoint loading, validation, prediction, post-processing, the overlay PNG, the report and "
        "writing the NIfTI. Later runs overwrite the first run's outputs (warm file cache).\n"
        f"- Last column: the model time rescaled from the matmul rate probed just before and after the run to "
        f"{args.reference_gflops:.0f} GFLOP/s (`--reference-gflops`, the idle rate in shared/README.md), the rest "
        "as measured: an estimate of the idle machine, not a measurement."
    )
    report.finish(Path(args.out), "volume", md)


# ------------------------------------------------------------------------------ bf16 check
AMP_ENCODERS = ("sam2.1_hiera_tiny", "mobilesam_tinyvit")


def amp_child(size: int, batch: int, repeats: int, threads: int) -> dict[str, Any]:
    """fp32 against bf16 autocast: a 1024^2 matmul, the probe ``train.amp=auto`` decides by,
    and training steps of each encoder in :data:`AMP_ENCODERS`; plus what ``auto`` picks."""
    if threads:
        torch.set_num_threads(threads)
    from s2unet.engine.precision import measure_cpu_bf16_speedup, resolve_amp

    out: dict[str, Any] = {"threads": torch.get_num_threads()}
    out["matmul_fp32"] = matmul_rate(1024, repeats=5)
    # Emulated bf16 runs at well under 1 GFLOP/s on AVX2: a 1024^2 product takes seconds, so 2 repeats.
    out["matmul_bf16"] = matmul_rate(1024, repeats=2, dtype=torch.bfloat16)
    t0 = time.perf_counter()
    choice = resolve_amp("auto", torch.device("cpu"))  # exactly what train.py decides (cached per machine)
    out["auto"] = {"precision": choice.name, "reason": choice.reason, "decision_s": time.perf_counter() - t0}
    out["probe_fresh"] = measure_cpu_bf16_speedup()  # a second, uncached probe: its spread from run to run
    settings = Settings(warmup=1, repeats=repeats, min_repeats=2, phase_budget_s=30.0, threads=threads)
    workloads: dict[str, Any] = {}
    for encoder in AMP_ENCODERS:
        base = ["model.weights=random", f"model.encoder={encoder}", f"data.image_size={size}", f"train.batch_size={batch}"]
        cases = [make_case(f"{encoder} {name}", base + [f"train.amp='{amp}'"], phases=("train",))
                 for name, amp in (("fp32", "off"), ("bf16", "bf16"))]
        with warnings.catch_warnings():  # the bf16 case is forced on purpose: no "measured slower" warning
            warnings.simplefilter("ignore")
            fp32, bf16 = (r["phases"]["train"] for r in measure_cases(cases, settings))
        speedup = paired_ratio(fp32["times_s"], bf16["times_s"])
        workloads[encoder] = {"fp32": fp32, "bf16": bf16, "speedup": speedup,
                              "faster": "bf16" if speedup is not None and speedup > 1.0 else "fp32"}
    out["training_steps"] = workloads
    # auto's promise: never slower than fp32. fp32 always keeps it; bf16 only if every model trains faster.
    out["never_slower"] = choice.name == "fp32" or all(w["faster"] == "bf16" for w in workloads.values())
    out["matches_faster"] = {enc: w["faster"] == choice.name for enc, w in workloads.items()}
    return out


def run_amp_check(args: argparse.Namespace) -> None:
    """``--amp-check``: is bf16 worth it on this CPU, and is ``resolve_amp("auto")`` right?"""
    report = Report("amp", args)
    res = run_isolated(amp_child, args.amp_size, args.amp_batch, max(2, args.repeats), args.threads,
                       isolate=not args.no_isolate)
    report.data["results"] = res
    f32, b16, probe = res["matmul_fp32"], res["matmul_bf16"], res["probe_fresh"]
    rows = [
        ["1024^2 matmul", f"{f32['gflops']:.1f} GFLOP/s", f"{b16['gflops']:.1f} GFLOP/s", ratio(b16["gflops"], f32["gflops"])],
        ["probe block of `train.amp=auto` (uncached), training step", f"{probe['fp32_s'] * 1e3:.1f} ms",
         f"{probe['bf16_s'] * 1e3:.1f} ms", probe["speedup"]],
    ]
    for encoder, w in res["training_steps"].items():
        rows.append([f"{encoder} training step, {args.amp_batch} x {args.amp_size} px", f"{w['fp32']['median_step_s']:.3f} s",
                     f"{w['bf16']['median_step_s']:.3f} s", w["speedup"]])
    auto = res["auto"]
    matches = ", ".join(f"{enc} {'yes' if ok else 'no'}" for enc, ok in res["matches_faster"].items())
    md = markdown_table(["workload", "fp32", "bf16", "bf16 speed-up (x, > 1 = bf16 faster)"], rows) + (
        f"\n\nTraining steps: stage adapters, loss, backward, AdamW, as `train.py`; fp32 and bf16 interleaved, "
        f"speed-up = median of per-round time ratios.\n\n"
        f"- `train.amp: auto` here: **{auto['precision']}** — {auto['reason']} ({auto['decision_s']:.2f} s to decide).\n"
        f"- The faster precision is auto's choice for: {matches}.\n"
        f"- auto never slower than fp32 on this machine: **{'yes' if res['never_slower'] else 'NO: choice WRONG'}**."
    )
    report.finish(Path(args.out), "amp", md)
