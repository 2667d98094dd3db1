#!/usr/bin/env python
"""Measure a proposed change to ``s2unet.losses.boundary_weights`` (not applied here).

The structure loss weighs pixels by ``1 + 5 |avg_pool2d(target, 31, stride 1, pad 15) - target|``
and computes it once per deep-supervision head. A profile of a Hiera-T training step at 352 px
showed ``aten::avg_pool2d`` as about a fifth of the step: a dense 31 x 31 window costs 961 adds
per pixel. With zero padding and ``count_include_pad=True`` the divisor is the constant 961, so
the box filter is exactly separable: a 31 x 1 pass then a 1 x 31 pass (62 adds per pixel).

This script checks that the separable form gives the same weights and times, interleaved in one
process, (1) the weight computation alone and (2) a whole s2unet training step with the loss
using either form (by swapping the module attribute the loss looks up at call time)::

    python bench/boundary_weights_check.py [--size 352] [--batch 2] [--repeats 5]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402


def separable_boundary_weights(target: torch.Tensor, kernel: int = 31, gain: float = 5.0) -> torch.Tensor:
    """Same result as ``s2unet.losses.boundary_weights``, as two 1-D box filters."""
    pad = kernel // 2
    local_mean = F.avg_pool2d(target, (kernel, 1), stride=1, padding=(pad, 0), count_include_pad=True)
    local_mean = F.avg_pool2d(local_mean, (1, kernel), stride=1, padding=(0, pad), count_include_pad=True)
    return 1.0 + gain * (local_mean - target).abs()


def interleaved(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds of each function, called in turns (A, B, A, B ...) after one warm-up."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(repeats + 1):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            if r:
                times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=352)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()

    import s2unet.losses as losses
    from s2unet.config import load_config
    from s2unet.models import create_model

    original = losses.boundary_weights
    gen = torch.Generator().manual_seed(0)
    target = (torch.rand(args.batch, 1, args.size, args.size, generator=gen) > 0.95).float()
    diff = (original(target) - separable_boundary_weights(target)).abs().max().item()
    print(f"max |difference| of the weights: {diff:.2e}")

    w = interleaved({"dense 31x31": lambda: original(target), "separable": lambda: separable_boundary_weights(target)},
                    args.repeats)
    print(f"boundary_weights on {tuple(target.shape)}: " + ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in w.items()))

    cfg = load_config(None, ["model.weights=random", f"data.image_size={args.size}"])
    model = create_model(cfg).train()
    loss = losses.build_loss(cfg.loss, multiclass=False)
    params = [q for q in model.parameters() if q.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.train.lr)
    x = torch.rand(args.batch, 3, args.size, args.size, generator=gen)

    def step(weights: Callable[..., torch.Tensor]) -> None:
        losses.boundary_weights = weights  # structure_loss resolves the name at call time
        try:
            opt.zero_grad(set_to_none=True)
            loss(model(x), target).backward()
            torch.nn.utils.clip_grad_norm_(params, cfg.train.grad_clip)
            opt.step()
        finally:
            losses.boundary_weights = original

    s = interleaved({"dense": lambda: step(original), "separable": lambda: step(separable_boundary_weights)},
                    args.repeats)
    print(f"Hiera-T training step, batch {args.batch} at {args.size} px: "
          + ", ".join(f"{k} {v:.2f} s" for k, v in s.items())
          + f"; separable / dense = {s['separable'] / s['dense']:.3f}")


if __name__ == "__main__":
    main()
