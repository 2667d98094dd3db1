"""The structure loss against hand-computed values, and its options."""
from __future__ import annotations

import math
import re

import pytest
import torch
import torch.nn.functional as F

from s2unet.config import ConfigError, LossConfig, load_config
from s2unet.losses import LOSSES, boundary_weights, build_loss, loss_params, structure_loss


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


@pytest.mark.parametrize("name", list(LOSSES))
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


def _seeded_binary_case():
    g = torch.Generator().manual_seed(0)
    target = (torch.rand(2, 1, 24, 24, generator=g) > 0.7).float()
    return [torch.randn(2, 1, 24, 24, generator=g) for _ in range(3)], target


def test_default_loss_value_is_pinned():
    # The value of the default loss before it moved behind the registry (same inputs, same code path).
    outs, target = _seeded_binary_case()
    assert build_loss(load_config().loss, multiclass=False)(outs, target).item() == pytest.approx(1.4510921, rel=1e-5)


@pytest.mark.parametrize("name", list(LOSSES))
def test_every_loss_lowers_for_a_better_binary_prediction(name):
    outs, target = _seeded_binary_case()
    loss_fn = build_loss(LossConfig(name=name), multiclass=False)
    assert loss_fn([(target * 2 - 1) * 4], target) < loss_fn(outs, target)


@pytest.mark.parametrize("name", list(LOSSES))
def test_every_loss_parameter_reaches_the_loss(name):
    # Each declared key, moved off its default, changes the value: none is silently ignored.
    import dataclasses

    outs, target = _seeded_binary_case()
    base = build_loss(LossConfig(name=name), multiclass=False)(outs, target)
    changed = {"boundary_kernel": 7, "boundary_gain": 1.0, "gamma": 0.5, "alpha": 0.9, "lambda_dice": 0.3,
               "lambda_focal": 3.0, "lambda_ce": 3.0, "include_background": False,
               "batch": True}
    for f in dataclasses.fields(LOSSES[name].params):
        if f.name == "include_background":
            continue  # binary targets have no background channel to leave out
        value = build_loss(LossConfig(name=name, params={f.name: changed[f.name]}), multiclass=False)(outs, target)
        assert value.item() != pytest.approx(base.item(), rel=1e-6), f.name


@pytest.mark.parametrize("name", list(LOSSES))
def test_every_loss_refuses_an_unknown_key_by_name(name):
    with pytest.raises(ConfigError, match=rf"unknown config key loss.lamda_dice.*\(loss {name}\)"):
        loss_params(LossConfig(name=name, params={"lamda_dice": 1.0}))


@pytest.mark.parametrize("override, message", [
    ("loss.name=dice_focl", "loss.name: 'dice_focl' is not a registered loss (did you mean 'dice_focal'?)"),
    ("loss.gama=2", "unknown config key loss.gama; did you mean loss.gamma?"),
    ("loss.boundary_gain=-1", "loss.boundary_gain must be >= 0, got -1.0"),
    ("loss.boundary_kernel=30", "loss.boundary_kernel must be odd"),
    ("loss.boundary_kernel=true", "loss.boundary_kernel: expected int, got True"),
])
def test_loss_keys_are_checked_like_config_keys(override, message):
    name = ["loss.name=dice_focal"] if "gam" in override else []
    cfg = load_config(None, name + [override])
    with pytest.raises(ConfigError, match=re.escape(message)):
        build_loss(cfg.loss, multiclass=False)


def test_loss_keys_are_written_flat_and_read_back(tmp_path):
    cfg = load_config(None, ["loss.name=dice_focal", "loss.gamma=1.5"])
    assert cfg.to_dict()["loss"] == {"name": "dice_focal", "deep_supervision_weights": [0.25, 0.5, 1.0], "gamma": 1.5}
    from s2unet.config import config_from_dict, save_config

    assert config_from_dict(cfg.to_dict()) == cfg
    save_config(cfg, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == cfg
    # a config written before the registry (name and head weights only) still loads
    old = load_config(None, ["loss.name=dice_ce", "loss.deep_supervision_weights=[0, 1, 1]"])
    assert loss_params(old.loss) == LOSSES["dice_ce"].params()
