"""Window partitioning for windowed attention over a grid padded up to whole windows.

Hiera and TinyViT pad a token grid at the bottom and right to whole windows and let the padding
tokens take part in the attention. Every padding token projects to the same vector (the
projection of a zero token), so the encoders project only the real tokens and build the
windows here: real tokens and that one fill vector written straight into the window layout,
and back, in one pass each (no padded grid, no separate permute copy).
"""
from __future__ import annotations

from typing import Iterator

import torch


def _blocks(size: int, window: int) -> Iterator[tuple[slice, slice, int]]:
    """Along one axis: (window indices, grid positions, positions per window) of the whole
    windows, then of the last, partly padded one if there is one."""
    # Not divmod: under torch.jit.trace (and the TorchScript ONNX exporter) sizes are 0-dim
    # tensors, which // and % accept and divmod does not.
    whole, rest = size // window, size % window
    if whole:
        yield slice(0, whole), slice(0, whole * window), window
    if rest:
        yield slice(whole, whole + 1), slice(whole * window, size), rest


def _to_windows(grid: torch.Tensor, fill: torch.Tensor, window: int) -> torch.Tensor:
    b, h, w, c = grid.shape
    nh, nw = -(-h // window), -(-w // window)
    out = grid.new_empty(b, nh, nw, window, window, c)
    tiles = out.permute(0, 1, 3, 2, 4, 5)  # (B, nh, window, nw, window, C): grid-shaped view
    for rows, grid_rows, height in _blocks(h, window):
        for cols, grid_cols, width in _blocks(w, window):
            tiles[:, rows, :height, cols, :width] = (
                grid[:, grid_rows, grid_cols].unflatten(1, (-1, height)).unflatten(3, (-1, width))
            )
    if h % window:
        tiles[:, -1, h % window:] = fill
    if w % window:
        tiles[:, :, :, -1, w % window:] = fill
    return out.view(b * nh * nw, window, window, c)


def _to_grid(windows: torch.Tensor, height: int, width: int) -> torch.Tensor:
    n, window, _, c = windows.shape
    nh, nw = -(-height // window), -(-width // window)
    tiles = windows.view(n // (nh * nw), nh, nw, window, window, c).permute(0, 1, 3, 2, 4, 5)
    out = windows.new_empty(n // (nh * nw), height, width, c)
    for rows, grid_rows, h in _blocks(height, window):
        for cols, grid_cols, w in _blocks(width, window):
            out[:, grid_rows, grid_cols].unflatten(1, (-1, h)).unflatten(3, (-1, w)).copy_(
                tiles[:, rows, :h, cols, :w]
            )
    return out


def _padding_sum(windows: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Sum over the padding positions of (B * nh * nw, window, window, C) windows: (C,)."""
    n, window, _, c = windows.shape
    nh, nw = -(-height // window), -(-width // window)
    tiles = windows.view(n // (nh * nw), nh, nw, window, window, c).permute(0, 1, 3, 2, 4, 5)
    total = windows.new_zeros(c)
    dh, dw = height % window, width % window
    if dh:
        total += tiles[:, -1, dh:].sum(dim=(0, 1, 2, 3))
    if dw:
        total += tiles[:, :, :, -1, dw:].sum(dim=(0, 1, 2, 3))
    if dh and dw:
        total -= tiles[:, -1, dh:, -1, dw:].sum(dim=(0, 1, 2))
    return total


class _GridToWindows(torch.autograd.Function):
    # Written out because autograd through the piecewise writes chains one full-size gradient
    # copy per write: the backward of one is the other's forward.
    @staticmethod
    def forward(ctx, grid: torch.Tensor, fill: torch.Tensor, window: int) -> torch.Tensor:
        ctx.hw = grid.shape[1:3]
        return _to_windows(grid, fill, window)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None]:
        grad_grid = _to_grid(grad, *ctx.hw) if ctx.needs_input_grad[0] else None
        grad_fill = _padding_sum(grad, *ctx.hw) if ctx.needs_input_grad[1] else None
        return grad_grid, grad_fill, None


class _WindowsToGrid(torch.autograd.Function):
    @staticmethod
    def forward(ctx, windows: torch.Tensor, height: int, width: int) -> torch.Tensor:
        ctx.window = windows.shape[1]
        return _to_grid(windows, height, width)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        return _to_windows(grad, grad.new_zeros(()), ctx.window), None, None


def grid_to_windows(grid: torch.Tensor, fill: torch.Tensor, window: int) -> torch.Tensor:
    """Cut a token grid into windows, padding it at the bottom and right with ``fill``.

    Args:
        grid: (B, H, W, C) tokens.
        fill: (C,) the value of every padding token.
        window: window side.

    Returns:
        (B * nh * nw, window, window, C) windows, row-major, nh = ceil(H / window) and
        nw = ceil(W / window).
    """
    return _GridToWindows.apply(grid, fill, window)


def windows_to_grid(windows: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Put windows back into a grid and drop the padding (the inverse of ``grid_to_windows``).

    Args:
        windows: (B * nh * nw, window, window, C), as ``grid_to_windows`` returns them.
        height: H of the grid without padding.
        width: W of the grid without padding.

    Returns:
        (B, H, W, C) contiguous tokens.
    """
    return _WindowsToGrid.apply(windows, height, width)
