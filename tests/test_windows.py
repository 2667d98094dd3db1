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


@pytest.mark.parametrize("hw", [(9, 9), (9, 14), (14, 3)])
def test_gradients_match_autograd_through_padding(hw: tuple[int, int]) -> None:
    h, w = hw
    grid = torch.randn(2, h, w, 4, dtype=torch.float64, requires_grad=True)
    fill = torch.randn(4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda g, f: grid_to_windows(g, f, 7), (grid, fill))
    windows = torch.randn(2 * (-(-h // 7)) * (-(-w // 7)), 7, 7, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: windows_to_grid(x, h, w), (windows,))
