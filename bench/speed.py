#!/usr/bin/env python
"""Speed and memory benchmark of s2unet models on the machine it runs on.

One entry point, five modes (see ``bench/README.md`` for the columns)::

    python bench/speed.py                       # default grid (encoders x sizes + CNN reference)
    python bench/speed.py --full                # every encoder at every size
    python bench/speed.py --compare "model.adapter.placement=stage" "model.adapter.placement=block"
    python bench/speed.py --placements          # adapter placement trade-off, Hiera-T 352 px batch 8
    python bench/speed.py --volume              # end-to-end CT volume through run_inference
    python bench/speed.py --amp-check           # bf16 vs fp32 on this CPU, and train.amp=auto's choice

Everything a configuration needs is a list of overrides: ``key.sub=value`` items go to
``s2unet.config.load_config`` (so ``data.image_size`` is the image size and
``train.batch_size`` the training batch), and ``bench.*`` items set benchmark-only knobs
(``bench.infer_batch``, ``bench.threads``, ``bench.channels_last``, ``bench.compile``,
``bench.merge_lora``). Every mode measures with the same function, :func:`measure_cases`:
grid and placement rows each run it in a fresh process (so peak memory belongs to one
configuration), ``--compare`` runs it once with all its configurations interleaved (so
background load hits them alike and the ratio of medians is meaningful on a shared machine).

The code: :mod:`bench.speed_probes` (timing, memory, matmul rate, FLOPs),
:mod:`bench.speed_runner` (configurations, the runner timing the library's own training step
:class:`s2unet.engine.step.TrainStep`, process isolation), :mod:`bench.speed_report` (machine,
tables, result files) and :mod:`bench.speed_modes` (the five modes); this file is the command line.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Optional, Sequence

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as ``python bench/speed.py`` from a checkout, not installed
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402  (after the path fix above)

from bench.speed_modes import run_amp_check, run_compare, run_grid, run_placements, run_volume  # noqa: E402
from bench.speed_reference import run_inference_precision, run_reference  # noqa: E402
from bench.speed_runner import set_reuse_memory  # noqa: E402
from s2unet.runtime import keep_freed_memory  # noqa: E402

RESULTS_DIR = REPO / "bench" / "results"


# ------------------------------------------------------------------------------ command line
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Columns and examples: bench/README.md")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--compare", nargs="+", metavar="OVERRIDES",
                      help="configurations to interleave in one process, each a comma-separated override list")
    mode.add_argument("--placements", action="store_true", help="adapter placement trade-off (Hiera-T, batch 8)")
    mode.add_argument("--volume", action="store_true", help="end-to-end CT volume timing through run_inference")
    mode.add_argument("--amp-check", action="store_true", help="fp32 vs bf16 on this CPU and train.amp=auto's choice")
    mode.add_argument("--reference", action="store_true",
                      help="s2unet against the SAM2-UNet reference (bench/sam2unet_reference.py), in turns")
    mode.add_argument("--inference-precision", action="store_true",
                      help="--precision auto's choice per encoder and the bf16 / fp32 inference time ratio")
    p.add_argument("--full", action="store_true", help="grid: also the slowest encoder/size combinations")
    p.add_argument("--encoders", help="grid: comma-separated encoder names (default: the four SAM-family ones)")
    p.add_argument("--sizes", help="grid: comma-separated image sizes (default 256,352,512)")
    p.add_argument("--no-unet", action="store_true", help="grid: leave out the monai UNet reference")
    p.add_argument("--batch", type=int, default=4, help="training batch (default 4; --placements uses --placement-batch)")
    p.add_argument("--infer-batch", type=int, default=8,
                   help="slices per inference call (default 8, as infer.py's --batch-size)")
    p.add_argument("--repeats", type=int, default=3, help="timed steps per phase; the median is reported (default 3)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps after the FLOP-counting step (default 1)")
    p.add_argument("--phase-budget", type=float, default=20.0,
                   help="grid: stop adding repeats (keeping >= 2) once a phase used this many seconds (0 = off)")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--weights", default="random", help="model.weights: random (default; same compute), default or a path")
    p.add_argument("--size", type=int, default=352, help="--compare / --placements image size (default 352)")
    p.add_argument("--encoder", help="--compare: encoder of every configuration unless it sets its own")
    p.add_argument("--phases", default="train,infer", help="--compare: phases to time (default train,infer)")
    p.add_argument("--tag", default="", help="--compare: suffix of the output file names")
    p.add_argument("--placement-batch", type=int, default=8, help="--placements training batch (default 8)")
    p.add_argument("--volume-slices", type=int, default=100)
    p.add_argument("--volume-batch", type=int, default=8, help="run_inference batch_size (default 8)")
    p.add_argument("--volume-runs", type=int, default=1, help="times to run the volume (default 1)")
    p.add_argument("--volume-encoder", default="sam2.1_hiera_tiny")
    p.add_argument("--reference-gflops", type=float, default=150.0,
                   help="--volume: idle matmul rate to rescale the model time to (default 150, shared/README.md)")
    p.add_argument("--amp-size", type=int, default=256, help="--amp-check training image size (default 256)")
    p.add_argument("--amp-batch", type=int, default=2, help="--amp-check training batch (default 2)")
    p.add_argument("--out", default=str(RESULTS_DIR), help="output folder (default bench/results)")
    p.add_argument("--omp-wait-policy", choices=("passive", "active", "inherit"), default="passive",
                   help="OMP_WAIT_POLICY of the measuring processes (default passive: see README; "
                        "inherit = leave the environment as it is)")
    p.add_argument("--malloc", choices=("reuse", "default"), default="reuse",
                   help="reuse = keep freed memory for reuse, as train/infer do (s2unet.runtime); "
                        "default = glibc's own behaviour (fresh, page-faulted mmap for every large tensor)")
    p.add_argument("--no-isolate", action="store_true", help="measure in this process (peaks then mix; for debugging)")
    return p


def apply_omp_wait_policy(policy: str, isolate: bool) -> Optional[str]:
    """Set OMP_WAIT_POLICY for the measuring processes; returns the value they run with.

    GNU OpenMP reads it once, when torch is imported, so it is set here, before the fork
    server (which imports torch for every child) starts. Why ``passive`` by default: with
    the default (spinning) policy, torch's two OpenMP threads on a 2-core machine shared with
    other jobs waste their time slices spinning at barriers; a Hiera-T training step measured
    1.3x (load 8) to 4x (load 6) slower than with ``passive`` (bench/results/investigation.md),
    which would make the tables a measurement of the neighbours rather than of the model.
    """
    if policy != "inherit":
        os.environ["OMP_WAIT_POLICY"] = policy.upper()
        if not isolate:
            print("note: --no-isolate measures in this process, whose OpenMP already started: "
                  "--omp-wait-policy has no effect here (set OMP_WAIT_POLICY in the environment)", file=sys.stderr)
    return os.environ.get("OMP_WAIT_POLICY")


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    args.omp_wait_policy_effective = apply_omp_wait_policy(args.omp_wait_policy, not args.no_isolate)
    set_reuse_memory(args.malloc == "reuse")
    if args.malloc == "reuse" and args.no_isolate:
        keep_freed_memory()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.compare:
        run_compare(args)
    elif args.placements:
        run_placements(args)
    elif args.volume:
        run_volume(args)
    elif args.amp_check:
        run_amp_check(args)
    elif args.reference:
        run_reference(args)
    elif args.inference_precision:
        run_inference_precision(args)
    else:
        run_grid(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
