"""Window partitioning with a fill value (s2unet.models.encoders.windows) against sam2's own."""
from __future__ import annotations

import pytest
import torch
from sam2.modeling.backbones.utils import window_partition, window_unpartition

from s2unet.models.encoders.windows import grid_to_windows, windows_to_grid


@pytest.mark.parametrize("hw", [(16, 16), (22, 9), (28, 14), (5, 5)])
def test_matches_sam2_partition_of_the_padded_grid(hw: tuple[int, int]) -> None:
    h, w = hw
    grid = torch.randn(2, h, w, 3)
    fill = torch.tensor([0.5, -1.0, 2.0])
    window = 7
    # sam2 pads with zeros: shift so that zero padding stands for the fill value.
    expected, (hp, wp) = window_partition(grid - fill, window)
    windows = grid_to_windows(grid, fill, window)
    torch.testing.assert_close(windows, expected + fill, rtol=0, atol=1e-6)
    back = windows_to_grid(windows, h, w)
    assert back.is_contiguous()
    assert torch.equal(back, grid)
    torch.testing.assert_close(back, window_unpartition(expected, window, (hp, wp), (h, w)) + fill,
                               rtol=0, atol=1e-6)


def test_gradients_reach_grid_and_fill() -> None:
    grid = torch.randn(1, 9, 9, 4, requires_grad=True)
    fill = torch.randn(4, requires_grad=True)
    windows = grid_to_windows(grid, fill, 7)  # 2 x 2 windows, 196 positions, 81 real
    windows.sum().backward()
    assert torch.equal(grid.grad, torch.ones_like(grid))
    assert torch.equal(fill.grad, torch.full((4,), 196.0 - 81.0))
