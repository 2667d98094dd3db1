#!/usr/bin/env python
"""Adopted speed changes against the code they replaced: same outputs, interleaved timings.

Each check keeps the replaced implementation here as a reference, verifies that the current
code computes the same thing, and times both in one process, in turns (A, B, A, B...), so
background load falls on both (bench/results/investigation.md cites these runs)::

    python bench/reference_check.py boundary-weights [--size 352] [--batch 2]
    python bench/reference_check.py tinyvit [--encoder mobilesam_tinyvit] [--size 256] [--batch 8]
    python bench/reference_check.py malloc [--size 352] [--batch 8]

``boundary-weights``: the structure loss's pixel weights as the dense 31 x 31 average pool
they started as, against the separable form in ``s2unet.losses``; the weights alone and a
whole Hiera-T training step.

``tinyvit``: TinyViT windowed attention as published (zero-pad the token grid, project every
padded token, a 3-D bias mask, which sends ``scaled_dot_product_attention`` to its unfused
path) on NCHW maps, against ``s2unet.models.encoders.tinyvit`` (projections of real tokens
only, a 4-D mask that takes the fused kernel, channels-last convolution stages); features,
inference and a training step.

``malloc``: page faults and kernel time of one Hiera-T ``predict_logits`` call with glibc's
default allocation and with ``s2unet.runtime.keep_freed_memory``.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from s2unet.runtime import prefer_passive_openmp  # noqa: E402

prefer_passive_openmp()  # before torch loads its OpenMP runtime
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from s2unet.runtime import keep_freed_memory  # noqa: E402


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


def report(what: str, times: dict[str, float], per: int = 1) -> None:
    """Print the medians (per image when ``per`` > 1) and current / reference."""
    (ref_name, ref), (cur_name, cur) = times.items()
    unit = "s per image" if per > 1 else "s"
    print(f"{what}: {ref_name} {ref / per:.4f} {unit}, {cur_name} {cur / per:.4f} {unit}; "
          f"{cur_name} / {ref_name} = {cur / ref:.3f}")


# ------------------------------------------------------------------------------ boundary weights
def dense_boundary_weights(target: torch.Tensor, kernel: int = 31, gain: float = 5.0) -> torch.Tensor:
    """The replaced form of ``s2unet.losses.boundary_weights``: one dense k x k average pool."""
    local_mean = F.avg_pool2d(target, kernel, stride=1, padding=kernel // 2, count_include_pad=True)
    return 1.0 + gain * (local_mean - target).abs()


def check_boundary_weights(args: argparse.Namespace) -> None:
    import s2unet.losses.structure as losses
    from s2unet.config import load_config
    from s2unet.losses import build_loss
    from s2unet.models import create_model_from_config

    current = losses.boundary_weights
    gen = torch.Generator().manual_seed(0)
    target = (torch.rand(args.batch, 1, args.size, args.size, generator=gen) > 0.95).float()
    diff = (current(target) - dense_boundary_weights(target)).abs().max().item()
    print(f"max |difference| of the weights: {diff:.2e}")
    report(f"boundary weights of {tuple(target.shape)}",
           interleaved({"dense": lambda: dense_boundary_weights(target), "separable": lambda: current(target)},
                       args.repeats))

    cfg = load_config(None, ["model.weights=random", f"data.image_size={args.size}"])
    model = create_model_from_config(cfg).train()
    loss = build_loss(cfg.loss, multiclass=False)
    params = [q for q in model.parameters() if q.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.train.lr)
    x = torch.rand(args.batch, 3, args.size, args.size, generator=gen)

    def step(weights: Callable[..., torch.Tensor]) -> None:
        losses.boundary_weights = weights  # structure_weights resolves the name at call time
        try:
            opt.zero_grad(set_to_none=True)
            loss(model(x), target).backward()
            opt.step()
        finally:
            losses.boundary_weights = current

    report(f"Hiera-T training step, batch {args.batch} at {args.size} px",
           interleaved({"dense": lambda: step(dense_boundary_weights), "separable": lambda: step(current)},
                       args.repeats))


# ------------------------------------------------------------------------------ TinyViT
def published_windowed_attention(block: torch.nn.Module, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """TinyViT's windowed attention as published: every padded token projected, 3-D bias mask."""
    b, _, c = x.shape
    ws, attn = block.window_size, block.attn
    grid = F.pad(x.view(b, h, w, c), (0, 0, 0, (-w) % ws, 0, (-h) % ws))
    ph, pw = grid.shape[1:3]
    windows = grid.view(b, ph // ws, ws, pw // ws, ws, c).transpose(2, 3).reshape(-1, ws * ws, c)
    n, length, _ = windows.shape
    qkv = attn.project(windows).view(n, length, attn.num_heads, 3, attn.head_dim).permute(3, 0, 2, 1, 4)
    q, k, v = qkv.unbind(0)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn.attention_biases[:, attn.bias_index])
    out = attn.proj(out.transpose(1, 2).reshape(n, length, c))
    out = out.view(b, ph // ws, pw // ws, ws, ws, c).transpose(2, 3).reshape(b, ph, pw, c)
    return out[:, :h, :w].reshape(b, h * w, c)


@contextmanager
def published_tinyvit() -> Iterator[None]:
    """Run TinyViT as published for the duration: padded projections, 3-D mask, NCHW maps."""
    from s2unet.models.encoders.tinyvit_blocks import TinyViTBlock

    current_attention, current_contiguous = TinyViTBlock._windowed_attention, torch.Tensor.contiguous

    def nchw(tensor: torch.Tensor, memory_format: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
        return current_contiguous(tensor)  # the encoder's channels-last conversion becomes a no-op

    TinyViTBlock._windowed_attention = published_windowed_attention
    torch.Tensor.contiguous = nchw
    try:
        yield
    finally:
        TinyViTBlock._windowed_attention = current_attention
        torch.Tensor.contiguous = current_contiguous


def check_tinyvit(args: argparse.Namespace) -> None:
    from s2unet.config import load_config
    from s2unet.models import create_model_from_config
    from s2unet.models.encoders.tinyvit import TinyViTEncoder

    cfg = load_config(None, [f"model.encoder={args.encoder}", "model.weights=random", f"data.image_size={args.size}"])
    torch.manual_seed(0)
    model = create_model_from_config(cfg)
    if not isinstance(model.encoder, TinyViTEncoder):
        raise SystemExit(f"--encoder {args.encoder} is not a TinyViT encoder (litemedsam_tinyvit, mobilesam_tinyvit)")
    with torch.no_grad():  # distinctive weights: random init has zero biases
        for p in model.encoder.parameters():
            p.add_(0.05 * torch.randn_like(p))
    params = [q for q in model.parameters() if q.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.train.lr)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(args.batch, 3, args.size, args.size, generator=gen)

    def features() -> list[torch.Tensor]:
        with torch.no_grad():
            return model.eval().features(x)

    with published_tinyvit():
        reference = features()
    diffs = [(a - b).abs().max().item() / b.abs().max().item() for a, b in zip(features(), reference)]
    print(f"{args.encoder} at {args.size} px: max |difference| of the four feature maps, relative to their "
          "largest value: " + ", ".join(f"{d:.1e}" for d in diffs))

    def published(fn: Callable[[], object]) -> Callable[[], None]:
        def run() -> None:
            with published_tinyvit():
                fn()
        return run

    def infer() -> None:
        with torch.inference_mode():
            model.eval().predict_logits(x)

    def train() -> None:
        model.train()
        opt.zero_grad(set_to_none=True)
        sum(out.mean() for out in model(x)).backward()
        opt.step()

    for name, fn in (("inference", infer), ("training step", train)):
        report(f"{name}, batch {args.batch}",
               interleaved({"published": published(fn), "s2unet": fn}, args.repeats), per=args.batch)


# ------------------------------------------------------------------------------ glibc memory
def check_malloc(args: argparse.Namespace) -> None:
    import resource

    from s2unet.config import load_config
    from s2unet.models import create_model_from_config

    cfg = load_config(None, ["model.weights=random", f"data.image_size={args.size}"])
    model = create_model_from_config(cfg).eval()
    x = torch.rand(args.batch, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
    for keep in (False, True):  # glibc untouched first: its own sliding mmap threshold included
        if keep:
            keep_freed_memory()
        with torch.inference_mode():
            for _ in range(2):  # warm-up: the heap reaches its working size
                model.predict_logits(x)
            before, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
            model.predict_logits(x)
            wall, after = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
        user, system = after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime
        print(f"{'kept for reuse' if keep else 'glibc default '}: one predict_logits of batch {args.batch} at "
              f"{args.size} px: {after.ru_minflt - before.ru_minflt} page faults, {system:.3f} of "
              f"{user + system:.2f} CPU-seconds in the kernel, {wall:.2f} s wall")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("check", choices=("boundary-weights", "tinyvit", "malloc"))
    p.add_argument("--size", type=int, help="image size (default 352; 256 for tinyvit)")
    p.add_argument("--batch", type=int, help="batch (default 2 for boundary-weights, else 8)")
    p.add_argument("--encoder", default="mobilesam_tinyvit", help="tinyvit: the TinyViT encoder")
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    if args.check == "boundary-weights":
        keep_freed_memory()  # as the train/infer commands run
        args.size, args.batch = args.size or 352, args.batch or 2
        check_boundary_weights(args)
    elif args.check == "tinyvit":
        keep_freed_memory()
        args.size, args.batch = args.size or 256, args.batch or 8
        check_tinyvit(args)
    else:
        args.size, args.batch = args.size or 352, args.batch or 8
        check_malloc(args)


if __name__ == "__main__":
    main()
