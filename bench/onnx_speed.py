"""PyTorch vs onnxruntime on the CPU for an s2unet model: ``python bench/onnx_speed.py [--iters N]``.

Builds the model with the real MobileSAM TinyViT encoder at 256 px (decoder at its initial
weights: speed does not depend on them), exports it with ``python -m s2unet export``'s code, and
times ``predict_logits`` of one image batch with one thread in both runtimes after a warm-up.
Writes ``bench/results/onnx_speed.json``.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from s2unet.config import config_from_dict
from s2unet.inference.export import export_model
from s2unet.models import create_model_from_config
from s2unet.models.checkpoint import atomic_save, model_payload
from s2unet.models.onnx_model import OnnxModel


def _seconds(fn, x: torch.Tensor, iters: int) -> float:
    fn(x)  # warm-up
    start = time.perf_counter()
    for _ in range(iters):
        fn(x)
    return (time.perf_counter() - start) / iters


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--output", default=str(Path(__file__).parent / "results" / "onnx_speed.json"))
    args = p.parse_args()
    torch.set_num_threads(1)
    cfg = config_from_dict({"model": {"encoder": "mobilesam_tinyvit"},
                            "data": {"kind": "image", "image_size": 256, "labels": ["lungs"]}})
    model = create_model_from_config(cfg).eval()
    x = torch.rand(args.batch, 3, 256, 256)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = Path(tmp) / "best.pt"
        atomic_save(model_payload(model, cfg, 0.5, {}), checkpoint)
        started = time.perf_counter()
        onnx_file = export_model(checkpoint, "onnx", Path(tmp) / "model.onnx")
        export_seconds = time.perf_counter() - started
        onnx_model = OnnxModel(onnx_file, threads=1)
        with torch.no_grad():
            torch_s = _seconds(model.predict_logits, x, args.iters)
            onnx_s = _seconds(onnx_model.predict_logits, x, args.iters)
            diff = float((model.predict_logits(x) - onnx_model.predict_logits(x)).abs().max())
    result = {"encoder": "mobilesam_tinyvit", "image_size": 256, "batch": args.batch, "threads": 1,
              "iters": args.iters, "seconds_per_batch": {"pytorch": torch_s, "onnxruntime": onnx_s},
              "onnx_speedup": torch_s / onnx_s, "max_abs_logit_difference": diff, "export_seconds": export_seconds,
              "torch": torch.__version__}
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
