"""The speed benchmark's report: machine description, floors, Markdown tables and the JSON /
Markdown result files (written atomically)."""
from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch

from bench.speed_probes import matmul_rate_child
from bench.speed_runner import run_isolated
from s2unet.io import write_json, write_text

GIB = 1024.0**3


# ------------------------------------------------------------------------------ machine + output
def machine_info() -> dict[str, Any]:
    """CPU model, cores, flags that matter for speed, torch build and threads."""
    model, flags = platform.processor() or "unknown", ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model in ("unknown", "", platform.machine()):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = line.split(":", 1)[1]
    except OSError:
        pass
    wanted = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
    info: dict[str, Any] = {
        "cpu_model": model,
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_flags": [f for f in wanted if f in flags.split()],
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        # The kernels torch dispatches to; ATEN_CPU_CAPABILITY / ONEDNN_MAX_CPU_ISA can hold them
        # below what the flags offer (e.g. a run without AMX on an AMX machine).
        "aten_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA"),
    }
    try:
        info["memory_gib"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB, 1)
    except (ValueError, OSError):
        pass
    return info


def load_average() -> Optional[list[float]]:
    """1, 5 and 15 minute load averages (other jobs on a shared machine show up here)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def fmt(value: Any, digits: int = 2) -> str:
    """A table cell: ``-`` for missing values, fixed decimals for floats."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def fmt_params(counts: Optional[dict[str, Any]]) -> str:
    """``trainable / total`` in millions."""
    if not counts:
        return "-"
    return f"{counts['trainable'] / 1e6:.2f}M / {counts['total'] / 1e6:.1f}M"


def command_line(script: str, argv: Optional[Sequence[str]]) -> str:
    """How a benchmark was run, for its report: ``python bench/<script> ARGS`` (``argv`` None: this process's)."""
    return shlex.join(["python", f"bench/{script}", *(argv if argv is not None else sys.argv[1:])])


def write_result(out: Path, result: dict[str, Any], markdown: Callable[[dict[str, Any]], str]) -> str:
    """Write ``<out>.json`` and its ``<out>.md`` report, each atomically; return and print the report."""
    text = markdown(result)
    write_json(out.with_suffix(".json"), result)
    write_text(out.with_suffix(".md"), text)
    print(text)
    return text


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(fmt(c) if not isinstance(c, str) else c for c in row) + " |" for row in rows]
    return "\n".join(lines)


def floor_ratio(phase: dict[str, Any], gflops: float) -> Optional[float]:
    """Measured time per image over the matmul floor (counted FLOPs / measured matmul rate)."""
    flops = phase.get("flops_per_image")
    per_image = phase.get("seconds_per_image")
    if not flops or per_image is None or not gflops:
        return None
    return per_image / (flops / (gflops * 1e9))


def add_floors(results: list[dict[str, Any]], gflops: float) -> None:
    """Store each phase's floor (seconds per image) and its time as a multiple of the floor.

    ``x_floor`` uses the machine's rate (the best matmul rate of the run); ``x_floor_at_load``
    the rate probed between the phase's own timed rounds, which cancels most background load.
    """
    for res in results:
        for phase in res.get("phases", {}).values():
            during = phase.get("matmul_gflops_during")
            flops = phase.get("flops_per_image")
            phase["floor_s_per_image"] = flops / (gflops * 1e9) if flops else None
            phase["x_floor"] = floor_ratio(phase, gflops)
            phase["x_floor_at_load"] = floor_ratio(phase, during) if during else None


def gib(value: Optional[float]) -> Optional[float]:
    return value / GIB if value is not None else None


class Report:
    """What one run measured: machine, load, floor, results; written as JSON and Markdown."""

    def __init__(self, mode: str, args: argparse.Namespace) -> None:
        self.mode = mode
        self.started = time.perf_counter()
        self.data: dict[str, Any] = {
            "mode": mode,
            "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
            "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": machine_info(),
            "load_average": {"start": load_average()},
            "settings": {k: v for k, v in vars(args).items() if not k.startswith("_")},
            "notes": [],
        }

    def floor(self, device: str, isolate: bool = True, threads: int = 0) -> float:
        """Measure the dense fp32 matmul rate now (in a child, like every measurement, so it
        runs with the same OpenMP settings); returns the best of these start/end probes so far
        (``machine_rate`` adds the probes between timed rounds)."""
        rate = run_isolated(matmul_rate_child, device, threads, isolate=isolate)
        self.data.setdefault("matmul_fp32", []).append({**rate, "load_average": load_average()})
        return max(r["gflops"] for r in self.data["matmul_fp32"])

    def machine_rate(self, probed: float, *result_lists: list[dict[str, Any]]) -> float:
        """The rate the floors use: the best median rate probed in the run, at its start and end
        (``probed``) and between every phase's timed rounds. The host's speed drifts (87-186
        GFLOP/s within one grid here, nothing else running), so the probes at the ends alone can
        miss its best."""
        during = [
            phase.get("matmul_gflops_during")
            for results in result_lists for res in results for phase in res.get("phases", {}).values()
        ]
        best = max([probed, *(d for d in during if d)])
        self.data["machine_gflops"] = best
        return best

    def finish(self, out_dir: Path, name: str, markdown: str) -> None:
        """Record the end load and time, write ``name``.json and ``name``.md, print the Markdown."""
        self.data["load_average"]["end"] = load_average()
        self.data["wall_s"] = round(time.perf_counter() - self.started, 1)
        header = self.header()
        text = header + "\n\n" + markdown.strip() + "\n"
        write_json(out_dir / f"{name}.json", self.data, indent=1)
        write_text(out_dir / f"{name}.md", text)
        print(text)
        print(f"wrote {out_dir / name}.json and .md ({self.data['wall_s']} s)")

    def threads(self) -> Any:
        """Thread counts the measurements ran with (from the results, else this process's)."""
        res = self.data.get("results")
        rows = res if isinstance(res, list) else [res] if isinstance(res, dict) else []
        counts = sorted({r["threads"] for r in rows if isinstance(r, dict) and "threads" in r})
        return "/".join(map(str, counts)) if counts else self.data["machine"]["torch_threads"]

    def header(self) -> str:
        m, load = self.data["machine"], self.data["load_average"]
        rates = self.data.get("matmul_fp32", [])
        lines = [
            f"Machine: {m['cpu_model']}, {m['usable_cpus']} usable CPUs ({', '.join(m['cpu_flags']) or 'no AVX flags'}), "
            f"torch {m['torch']}, {self.threads()} torch threads"
            + (f", CUDA {m['cuda']}" if m.get("cuda") else "")
            + (f", oneDNN limited to ONEDNN_MAX_CPU_ISA={m['onednn_max_cpu_isa']}" if m.get("onednn_max_cpu_isa") else "")
            + f"; {self.data['date_utc']}.",
            f"Load average (1/5/15 min) at start {load.get('start')}, at end {load.get('end')}: "
            "other jobs shared this machine, so absolute times are noisy; ratios measured in one "
            "interleaved run (`--compare`) are the robust numbers.",
            f"OMP_WAIT_POLICY={self.data['settings'].get('omp_wait_policy_effective') or '(unset: libgomp spins)'} "
            "in the measuring processes; glibc malloc "
            + ("keeps freed memory for reuse (`s2unet.runtime.keep_freed_memory`, as train/infer do)."
               if self.data["settings"].get("malloc", "default") == "reuse" else "as glibc's default (`--malloc default`)."),
        ]
        if rates:
            lines.append(
                "Dense fp32 matmul (2048^2, median): "
                + ", ".join(f"{r['gflops']:.0f} GFLOP/s" for r in rates)
                + "; floors use the best median probed in the run (these, and the probes between timed "
                + f"rounds): {self.data.get('machine_gflops') or max(r['gflops'] for r in rates):.0f} GFLOP/s."
            )
        return "\n".join(lines)


def pair_cell(a: Optional[float], b: Optional[float], digits: int = 2) -> str:
    """Two numbers in one cell, ``a / b``."""
    return f"{fmt(a, digits)} / {fmt(b, digits)}"


def gflop_cell(flops: Optional[float], macs: bool = True) -> Optional[float]:
    """GMAC (FLOPs / 2) or GFLOP per image."""
    if flops is None:
        return None
    return flops / 2e9 if macs else flops / 1e9
