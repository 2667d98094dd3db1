"""The assembled model: adapters, frozen trunk, LoRA merge, decoder heads, checkpoints."""
from __future__ import annotations

import copy

import pytest
import torch

from s2unet.config import load_config
from s2unet.models import create_model_from_config
from s2unet.models.checkpoint import atomic_save, load_model_checkpoint, model_payload
from s2unet.models.encoders import encoder_names, get_encoder_spec
from s2unet.weights import CheckpointError


def tiny_cfg(*overrides: str):
    return load_config(None, ["model.weights=random", "data.image_size=64", *overrides])


def test_untrained_adapters_leave_features_unchanged():
    plain = create_model_from_config(tiny_cfg("model.adapter.placement=none"))
    adapted = create_model_from_config(tiny_cfg("model.adapter.placement=stage"))
    adapted.encoder.load_state_dict(plain.encoder.state_dict())
    assert len(adapted.adapters) == 4
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(plain.features(x), adapted.features(x)):
            assert torch.equal(a, b)
        # and a trained (non-zero) adapter does change them
        adapted.adapters[1].up.weight.normal_()
        changed = adapted.features(x)
    assert not torch.equal(changed[1], plain.features(x)[1])


def test_block_placement_puts_an_adapter_before_every_block():
    model = create_model_from_config(tiny_cfg("model.adapter.placement=block"))
    assert len(model.adapters) == len(model.encoder.trunk.blocks)


def test_optimizer_step_changes_only_trained_parts():
    model = create_model_from_config(tiny_cfg("model.attention_lora.enabled=true"))
    model.train()
    frozen_before = {k: v.clone() for k, v in model.encoder.state_dict().items() if "lora_" not in k}
    trained_before = {k: v.clone() for k, v in model.trained_state_dict().items()}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(2):  # two steps: LoRA's B starts at zero, so A moves only from the second
        loss = sum(o.mean() for o in model(torch.rand(2, 3, 64, 64)))
        loss.backward()
        opt.step()
        opt.zero_grad()
    after = model.encoder.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in frozen_before.items())
    now = model.trained_state_dict()
    changed = {k for k, v in trained_before.items() if v.is_floating_point() and not torch.equal(v, now[k])}
    assert any(k.startswith("adapters.") for k in changed)
    assert any(k.startswith("decoder.heads.") for k in changed)
    assert any("lora_A" in k for k in changed) and any("lora_B" in k for k in changed)
    counts = model.parameter_counts()
    assert 0 < counts["trainable"] < 0.1 * counts["total"]


def test_merged_lora_gives_identical_outputs():
    model = create_model_from_config(tiny_cfg("model.attention_lora.enabled=true")).eval()
    for name, p in model.encoder.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.05)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        before = model.predict_logits(x)
        merged = model.merge_lora()
        after = model.predict_logits(x)
    assert merged == 2 * len(model.encoder.trunk.blocks)
    assert not any("lora_" in n for n, _ in model.named_parameters())
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-5)


def test_heads_and_output_channels():
    model = create_model_from_config(tiny_cfg("data.task=multilabel", "data.labels=[a,b,c]"))
    outs = model(torch.rand(2, 3, 64, 96))
    assert [tuple(o.shape) for o in outs] == [(2, 3, 64, 96)] * 3
    assert tuple(model.predict_logits(torch.rand(1, 3, 64, 64)).shape) == (1, 3, 64, 64)
    with pytest.raises(ValueError, match="multiple of the encoder stride 32"):
        model(torch.rand(1, 3, 70, 64))


def _round_trip(model, cfg, path):
    atomic_save(model_payload(model, cfg, 0.4, {"dice": 0.5}), path)
    return torch.load(path, weights_only=True), load_model_checkpoint(path)


def test_random_encoder_checkpoint_rebuilds_the_same_model(tmp_path):
    cfg = tiny_cfg()
    model = create_model_from_config(cfg).eval()
    for p in model.decoder.parameters():
        torch.nn.init.normal_(p, std=0.1)
    payload, loaded = _round_trip(model, cfg, tmp_path / "best.pt")
    # A fresh random draw would differ: the checkpoint carries the encoder it was trained with.
    assert model.encoder.state_dict().keys() <= {k.removeprefix("encoder.") for k in payload["state_dict"]}
    again = load_model_checkpoint(tmp_path / "best.pt")
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        expected = model.predict_logits(x)
        assert torch.equal(loaded.model.predict_logits(x), expected)
        assert torch.equal(again.model.predict_logits(x), expected)
    assert loaded.threshold == pytest.approx(0.4) and loaded.metrics == {"dice": 0.5}
    # A checkpoint without them (written before they were stored) is refused, not run.
    payload["state_dict"] = {k: v for k, v in payload["state_dict"].items() if not k.startswith("encoder.")}
    atomic_save(payload, tmp_path / "old.pt")
    with pytest.raises(CheckpointError, match=r"old\.pt was trained with model.weights: random"):
        load_model_checkpoint(tmp_path / "old.pt")


def test_encoder_from_a_file_is_left_out_of_the_checkpoint(tmp_path):
    trunk = tmp_path / "trunk.pt"
    torch.save(create_model_from_config(tiny_cfg()).encoder.state_dict(), trunk)
    cfg = tiny_cfg(f"model.weights={trunk}")
    model = create_model_from_config(cfg).eval()
    payload, loaded = _round_trip(model, cfg, tmp_path / "best.pt")
    assert not any(k.startswith("encoder.") for k in payload["state_dict"])
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded.model.predict_logits(x), model.predict_logits(x))


def test_foreign_checkpoint_is_refused(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"model": {"w": torch.zeros(1)}}, path)
    with pytest.raises(CheckpointError, match="other.pt is not an s2unet checkpoint"):
        load_model_checkpoint(path)


def test_checkpoint_of_another_architecture_is_refused(tmp_path):
    cfg = tiny_cfg()
    model = create_model_from_config(cfg)
    payload = model_payload(model, cfg, 0.5, {})
    payload["config"]["model"]["decoder_channels"] = payload["model_args"]["decoder_channels"] = [64, 32, 16]
    path = tmp_path / "best.pt"
    atomic_save(payload, path)
    with pytest.raises(Exception, match="best.pt"):
        load_model_checkpoint(path)


ENCODERS = ["sam2.1_hiera_tiny", "sam2.1_hiera_small", "sam2.1_hiera_base_plus", "sam2.1_hiera_large",
            "litemedsam_tinyvit", "mobilesam_tinyvit"]


@pytest.mark.parametrize("size", [256, 352])
@pytest.mark.parametrize("encoder", ENCODERS)
def test_forward_backward_every_encoder(encoder, size):
    model = create_model_from_config(tiny_cfg(f"model.encoder={encoder}"))
    model.train()
    outs = model(torch.rand(1, 3, size, size))
    assert all(o.shape[-2:] == (size, size) for o in outs)
    sum(o.float().mean() for o in outs).backward()
    grads = [p.grad for p in model.adapters.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_every_registered_encoder_is_covered():
    families = {get_encoder_spec(n).build for n in encoder_names()}
    covered = {get_encoder_spec(n).build for n in ENCODERS}
    assert families <= covered
    assert copy.copy(ENCODERS)  # the list the parametrised test above runs
