"""Decoder-only training reuses encoder features across epochs."""
from __future__ import annotations

import torch

from s2unet.config import load_config
from s2unet.engine.feature_cache import FeatureCache
from s2unet.models import create_model_from_config


def decoder_only_model():
    cfg = load_config(None, ["model.weights=random", "model.adapter.placement=none", "data.image_size=64"])
    return create_model_from_config(cfg).eval()


def test_cache_computes_each_item_once_and_matches_the_encoder(tmp_path):
    model = decoder_only_model()
    assert not model.encoder_trains
    images = torch.rand(3, 3, 64, 64)
    keys = [("a", 0), ("a", 1), ("b", 0)]
    cache = FeatureCache(max_bytes=2**30, spill_dir=tmp_path / "spill")
    first = cache.features(model, images, keys)
    again = cache.features(model, images[[2, 0]], [keys[2], keys[0]])
    assert (cache.misses, cache.hits) == (3, 2)
    with torch.no_grad():
        direct = model.features(images)
    for cached, ref, reordered in zip(first, direct, again):
        torch.testing.assert_close(cached, ref, rtol=1e-2, atol=1e-2)  # stored in fp16
        assert torch.equal(reordered, cached[[2, 0]])


def test_cache_spills_to_disk_beyond_its_budget_and_cleans_up(tmp_path):
    model = decoder_only_model()
    cache = FeatureCache(max_bytes=0, spill_dir=tmp_path / "spill")
    images = torch.rand(2, 3, 64, 64)
    first = cache.features(model, images, ["x", "y"])
    assert cache.nbytes == 0 and len(list((tmp_path / "spill").iterdir())) == 2
    second = cache.features(model, images, ["x", "y"])
    assert cache.hits == 2 and all(torch.equal(a, b) for a, b in zip(first, second))
    cache.clear()
    assert not (tmp_path / "spill").exists()


def test_encoder_runs_without_autograd_in_decoder_only_mode():
    model = decoder_only_model().train()
    feats = model.features(torch.rand(1, 3, 64, 64))
    assert all(not f.requires_grad for f in feats)
    assert model(torch.rand(1, 3, 64, 64))[-1].requires_grad  # the decoder still trains


def test_cache_serves_fp32_features_under_bf16_autocast(tmp_path):
    # The trainer asks the cache inside its autocast block; stored fp16 maps must not reach
    # autocast's dtype rules (torch.stack rejected them), on first use or from the cache.
    model = decoder_only_model()
    cache = FeatureCache(max_bytes=2**30, spill_dir=tmp_path / "spill")
    images = torch.rand(2, 3, 64, 64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        first = cache.features(model, images, ["x", "y"])
        again = cache.features(model, images, ["x", "y"])
    assert (cache.misses, cache.hits) == (2, 2)
    assert all(f.dtype == torch.float32 for f in first)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
