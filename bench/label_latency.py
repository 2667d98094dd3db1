#!/usr/bin/env python
"""Click latency of the labeling app: how long a correction click takes to answer.

A simulated user labels the lungs of real JSRT radiographs with the app's own code: each click
is placed where ``compare``'s iterative method places it (the centre of the largest error
region against the reference mask), the image embedding having been computed when the image
was opened (as the app does in the background). Two figures per click:

* ``model``: :meth:`s2unet.app.CaseEditor.click` (prompt encoding, mask decoding, resizing to
  the image, the object bookkeeping);
* ``request``: the whole ``POST /api/click`` through the FastAPI app (adds the autosave and
  the PNG of the answer), what the page waits for apart from the network.

    python bench/label_latency.py                       # mobilesam + litemedsam, 1 and 2 threads
    python bench/label_latency.py --models mobilesam --threads 1 --images 2 --clicks 5

Writes ``bench/results/label_latency.json`` and ``.md`` (``--out`` to change).
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as ``python bench/label_latency.py`` from a checkout
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from s2unet.app import build_state, create_app  # noqa: E402
from s2unet.prompts import next_correction_click  # noqa: E402
from s2unet.baselines.sam_predictors import create_predictor  # noqa: E402
from s2unet.io import write_json, write_text  # noqa: E402
from s2unet.metrics import metric_row  # noqa: E402

SHARED = Path(os.environ.get("S2UNET_SHARED", REPO.parent / "shared"))
DATA = SHARED / "data" / "cxr_jsrt_scr"
TARGET_SECONDS = 0.5


def _stats(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {"median": round(statistics.median(ordered), 3), "p90": round(ordered[int(0.9 * (len(ordered) - 1))], 3),
            "max": round(ordered[-1], 3), "n": len(ordered)}


def measure(model: str, threads: int, stems: list[str], clicks: int) -> dict[str, Any]:
    """Time ``clicks`` simulated correction clicks per image with one model and thread count."""
    from fastapi.testclient import TestClient

    torch.set_num_threads(threads)
    predictor = create_predictor(model)
    model_s: list[float] = []
    request_s: list[float] = []
    embed_s: list[float] = []
    dice: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        folder.mkdir()
        for stem in stems:
            (folder / f"{stem}.png").write_bytes((DATA / "images" / f"{stem}.png").read_bytes())
        state = build_state(folder, Path(tmp) / "out", ["lungs"], prompted=None)
        state.predictor = predictor
        client = TestClient(create_app(state))
        for stem in stems:
            gt = np.asarray(Image.open(DATA / "masks" / "lungs" / f"{stem}.png")) > 127
            client.post("/api/open", json={"case": stem})
            ed = state.editor(stem)
            t0 = time.perf_counter()
            predictor.set_image(ed.opened.plane(0), key=(stem, 0, "auto"))  # what the page's image load starts
            embed_s.append(time.perf_counter() - t0)
            for _ in range(clicks):
                click = next_correction_click(ed.masks[0, 0], gt)
                if click is None:
                    break
                body = {"case": stem, "x": click.x, "y": click.y, "add": bool(click.label)}
                t0 = time.perf_counter()
                answer = client.post("/api/click", json=body).json()
                request_s.append(time.perf_counter() - t0)
                model_s.append(answer["seconds"])
            dice.append(float(metric_row(ed.masks[0, :1], gt[None])["dice"]))
        state.worker.shutdown(wait=True)
    return {"model": model, "threads": threads, "images": stems, "clicks_per_image": clicks,
            "embed_seconds": _stats(embed_s), "click_model_seconds": _stats(model_s),
            "click_request_seconds": _stats(request_s), "final_dice_mean": round(float(np.mean(dice)), 4)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="mobilesam,litemedsam")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--images", type=int, default=3, help="JSRT images (the first ones by name)")
    parser.add_argument("--clicks", type=int, default=6, help="clicks per image")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "label_latency"))
    args = parser.parse_args(argv)
    if not (DATA / "images").is_dir():
        print(f"error: JSRT images not found under {DATA} (set S2UNET_SHARED)", file=sys.stderr)
        return 2
    stems = sorted(p.stem for p in (DATA / "images").glob("*.png"))[: args.images]
    rows = [measure(m, int(t), stems, args.clicks) for m in args.models.split(",") for t in args.threads.split(",")]
    result = {"command": "python bench/label_latency.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
              "load_average_at_end": [round(x, 2) for x in os.getloadavg()], "target_seconds": TARGET_SECONDS,
              "rows": rows}
    out = Path(args.out)
    write_json(out.with_suffix(".json"), result)
    lines = ["| model | threads | click, model (median / p90 s) | click, whole request (median / p90 s) | "
             "embedding (median s) | Dice after the clicks |", "|---|---|---|---|---|---|"]
    for r in rows:
        m, q = r["click_model_seconds"], r["click_request_seconds"]
        lines.append(f"| {r['model']} | {r['threads']} | {m['median']} / {m['p90']} | {q['median']} / {q['p90']} | "
                     f"{r['embed_seconds']['median']} | {r['final_dice_mean']} |")
    text = "\n".join([f"`{result['command'].strip()}`, load average at the end {result['load_average_at_end']}", "",
                      *lines, ""])
    write_text(out.with_suffix(".md"), text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
