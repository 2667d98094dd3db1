"""train.amp: auto takes bf16 on CPU only where a cached measurement shows it clearly faster."""
from __future__ import annotations

import json
import warnings

import pytest
import torch

from s2unet.engine import precision

CPU = torch.device("cpu")


@pytest.fixture
def measured(monkeypatch, tmp_path):
    """Replace the timing with a fixed speed-up; counts how often it was measured."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    state = {"speedup": 1.0, "calls": 0}

    def fake_measure() -> dict[str, float]:
        state["calls"] += 1
        return {"speedup": state["speedup"], "fp32_s": 0.1, "bf16_s": 0.1 / state["speedup"], "rounds": 5}

    monkeypatch.setattr(precision, "measure_cpu_bf16_speedup", fake_measure)
    return state


@pytest.mark.parametrize("speedup, expected", [(1.6, torch.bfloat16), (1.1, None), (0.5, None)])
def test_auto_takes_bf16_only_when_clearly_faster(measured, speedup, expected):
    measured["speedup"] = speedup
    choice = precision.resolve_amp("auto", CPU)
    assert choice.dtype is expected
    assert f"{speedup:.2f}x" in choice.reason and "train.amp=auto" in choice.reason


def test_cache_hit_does_not_measure_again(measured):
    measured["speedup"] = 1.6
    assert precision.resolve_amp("auto", CPU).dtype is torch.bfloat16
    measured["speedup"] = 0.5  # a second measurement would now say fp32
    again = precision.resolve_amp("auto", CPU)
    assert again.dtype is torch.bfloat16 and "cached" in again.reason
    assert measured["calls"] == 1
    saved = json.loads(precision.amp_cache_path().read_text())
    assert saved["machines"][precision.machine_key()]["speedup"] == 1.6


def test_other_thread_count_is_measured_separately(measured):
    threads = torch.get_num_threads()
    precision.resolve_amp("auto", CPU)
    torch.set_num_threads(1 if threads != 1 else 2)
    precision.resolve_amp("auto", CPU)
    assert measured["calls"] == 2


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"version": 1, "machines": {"x": 1}}', ""])
def test_corrupt_cache_is_measured_again_and_rewritten(measured, content):
    path = precision.amp_cache_path()
    path.parent.mkdir(parents=True)
    path.write_text(content)
    measured["speedup"] = 1.6
    assert precision.resolve_amp("auto", CPU).dtype is torch.bfloat16
    assert measured["calls"] == 1
    assert json.loads(path.read_text())["machines"][precision.machine_key()]["speedup"] == 1.6


def test_wrong_typed_cache_entry_is_measured_again(measured):
    path = precision.amp_cache_path()
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"version": 1, "machines": {precision.machine_key(): {"speedup": "fast"}}}))
    precision.resolve_amp("auto", CPU)
    assert measured["calls"] == 1


def test_explicit_bf16_that_measured_slower_warns_but_is_honoured(measured):
    measured["speedup"] = 0.5
    with pytest.warns(UserWarning, match="train.amp=bf16 is honoured, but bf16 0.50x the speed of fp32"):
        choice = precision.resolve_amp("bf16", CPU)
    assert choice.dtype is torch.bfloat16 and choice.name == "bf16"


def test_explicit_bf16_that_measured_faster_is_quiet(measured):
    measured["speedup"] = 1.6
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert precision.resolve_amp("bf16", CPU).dtype is torch.bfloat16


def test_off_and_fp16_on_cpu_do_not_measure(measured):
    assert precision.resolve_amp("off", CPU).dtype is None
    with pytest.warns(UserWarning, match="fp16 is not supported on CPU"):
        assert precision.resolve_amp("fp16", CPU).name == "fp32"
    assert measured["calls"] == 0


def test_measurement_leaves_the_seeded_random_stream_alone():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    result = precision.measure_cpu_bf16_speedup(rounds=2, budget_s=0.0)
    assert torch.equal(torch.rand(3), expected)
    assert result["speedup"] > 0 and result["rounds"] >= 1


def test_predictor_returns_fp32_probabilities_inside_autocast():
    # Validation and inference may run inside a caller's autocast block: bf16 logits must
    # still come back as float32 probabilities (numpy has no bf16).
    import numpy as np

    from s2unet.config import load_config
    from s2unet.predict import Predictor
    from s2unet.models import create_model_from_config

    cfg = load_config(None, ["model.weights=random", "model.adapter.placement=none", "data.image_size=64"])
    predictor = Predictor(create_model_from_config(cfg), cfg, batch_size=2)
    inputs = np.random.default_rng(0).random((2, 3, 80, 80), dtype=np.float32)
    reference = predictor.predict_batch(inputs)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        prob = predictor.predict_batch(inputs)
    assert prob.dtype == np.float32 and prob.shape == reference.shape == (2, 1, 80, 80)
    np.testing.assert_allclose(prob, reference, atol=0.05)


def test_auto_falls_back_to_fp32_when_bf16_cannot_run(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))

    def broken() -> dict[str, float]:
        raise RuntimeError("no bf16 kernel")

    monkeypatch.setattr(precision, "measure_cpu_bf16_speedup", broken)
    choice = precision.resolve_amp("auto", CPU)
    assert choice.dtype is None and "no bf16 kernel" in choice.reason
    with pytest.raises(RuntimeError, match="no bf16 kernel"):
        precision.resolve_amp("bf16", CPU)
