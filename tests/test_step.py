"""The training step shared by the trainer and the benchmark (s2unet.engine.step)."""
from __future__ import annotations

import pytest
import torch

from s2unet.engine.step import TrainStep


def _setup(accumulate: int, grad_clip: float = 0.0) -> tuple[torch.nn.Module, TrainStep]:
    torch.manual_seed(0)
    model = torch.nn.Conv2d(3, 1, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)

    def loss_fn(outputs, target):
        return torch.nn.functional.mse_loss(outputs[-1], target)

    net = lambda x: [model(x)]  # noqa: E731 - one deep-supervision head
    return model, TrainStep(net, loss_fn, optimizer, list(model.parameters()), torch.device("cpu"), None, grad_clip,
                            accumulate)


def test_accumulated_micro_batches_equal_one_whole_batch():
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(4, 3, 5, 5, generator=g), torch.rand(4, 1, 5, 5, generator=g)
    whole, step = _setup(1)
    loss = step(x, y)
    parts, acc = _setup(2)
    losses = [acc.backward(x[:2], y[:2]), acc.backward(x[2:], y[2:])]
    acc.update()
    assert loss == pytest.approx(sum(losses) / 2, rel=1e-6)  # reported undivided, the mean is the batch loss
    for a, b in zip(whole.parameters(), parts.parameters()):
        torch.testing.assert_close(a, b)
    assert all(p.grad is None for p in parts.parameters())  # cleared for the next step


def test_gradient_clipping_only_when_asked():
    x, y = torch.rand(2, 3, 4, 4) * 100, torch.zeros(2, 1, 4, 4)
    free, step = _setup(1)
    before = [p.detach().clone() for p in free.parameters()]
    step(x, y)
    moved_free = sum((p - b).norm() for p, b in zip(free.parameters(), before))
    clipped, step = _setup(1, grad_clip=1e-3)
    step(x, y)
    moved_clipped = sum((p - b).norm() for p, b in zip(clipped.parameters(), before))
    assert moved_clipped < 1e-3 < moved_free


def test_accumulate_must_be_positive():
    with pytest.raises(ValueError, match="accumulate must be >= 1"):
        _setup(0)
