"""The structure loss against hand-computed values, and its options."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from s2unet.config import LossConfig
from s2unet.losses import boundary_weights, build_loss, structure_loss


def test_boundary_weights_equal_the_dense_31x31_definition():
    target = (torch.rand(2, 3, 40, 57) > 0.6).float()
    dense = 1 + 5 * (F.avg_pool2d(target, 31, stride=1, padding=15, count_include_pad=True) - target).abs()
    torch.testing.assert_close(boundary_weights(target), dense)


def test_structure_loss_hand_computed():
    # A 4x4 image with one foreground pixel: every 31x31 window holds the whole image, so the
    # local mean is 1/961 everywhere; the foreground pixel weighs 1 + 5*960/961, the rest 1 + 5/961.
    target = torch.zeros(1, 1, 4, 4)
    target[0, 0, 1, 2] = 1.0
    logits = torch.zeros(1, 1, 4, 4)
    logits[0, 0, 0, 0] = 2.0  # one confident wrong pixel, so the BCE is not uniform
    w_on, w_off = 1 + 5 * 960 / 961, 1 + 5 / 961
    p = torch.sigmoid(logits)[0, 0]
    bce = [-math.log(1 - p[0, 0].item())] + [math.log(2)] * 15  # wrong pixel, then p = 0.5 ones
    weights = [w_off] + [w_off] * 14 + [w_on]  # the foreground pixel's BCE is also ln 2
    wbce = sum(w * b for w, b in zip(weights, bce)) / sum(weights)
    inter = 0.5 * w_on
    union = p[0, 0].item() * w_off + 0.5 * 14 * w_off + 1.5 * w_on
    expected = wbce + 1 - (inter + 1) / (union - inter + 1)
    assert structure_loss(logits, target).item() == pytest.approx(expected, rel=1e-6)
    # reducing the BCE before weighting (the known slip) gives another number
    slip = F.binary_cross_entropy_with_logits(logits, target).item() + 1 - (inter + 1) / (union - inter + 1)
    assert abs(slip - expected) > 1e-3


def test_deep_supervision_weights_and_fewer_heads():
    target = (torch.rand(2, 1, 32, 32) > 0.5).float()
    outs = [torch.randn(2, 1, 32, 32) for _ in range(3)]
    loss = build_loss(LossConfig(deep_supervision_weights=[0.0, 1.0, 3.0]), multiclass=False)
    expected = (structure_loss(outs[1], target) + 3 * structure_loss(outs[2], target)) / 4
    torch.testing.assert_close(loss(outs, target), expected)
    torch.testing.assert_close(loss(outs[-1:], target), structure_loss(outs[2], target))


@pytest.mark.parametrize("name", ["structure", "dice_ce", "dice_focal"])
def test_multiclass_and_monai_variants_train(name):
    target = torch.randint(0, 3, (2, 16, 16))
    logits = torch.zeros(2, 3, 16, 16, requires_grad=True)
    loss_fn = build_loss(LossConfig(name=name), multiclass=True)
    before = loss_fn([logits], target)
    before.backward()
    with torch.no_grad():
        better = F.one_hot(target, 3).movedim(-1, 1).float() * 4
    assert loss_fn([better], target) < before
    assert torch.isfinite(logits.grad).all()
