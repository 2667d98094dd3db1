"""train.amp: auto takes bf16 on CPU only where a cached measurement shows it clearly faster."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from s2unet.engine import precision
from s2unet.predict import precision as shared

CPU = torch.device("cpu")


@pytest.fixture
def measured(monkeypatch, tmp_path):
    """Replace the timing with a fixed speed-up; counts how often it was measured."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    state = {"speedup": 1.0, "calls": 0}

    def fake_measure(probe=None) -> dict[str, float]:
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
    saved = json.loads(shared.amp_cache_path().read_text())
    assert saved["machines"][f"{shared.machine_key()} | train probe block"]["speedup"] == 1.6


def test_other_thread_count_is_measured_separately(measured):
    threads = torch.get_num_threads()
    precision.resolve_amp("auto", CPU)
    torch.set_num_threads(1 if threads != 1 else 2)
    precision.resolve_amp("auto", CPU)
    assert measured["calls"] == 2


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"version": 1, "machines": {"x": 1}}', ""])
def test_corrupt_cache_is_measured_again_and_rewritten(measured, content):
    path = shared.amp_cache_path()
    path.parent.mkdir(parents=True)
    path.write_text(content)
    measured["speedup"] = 1.6
    assert precision.resolve_amp("auto", CPU).dtype is torch.bfloat16
    assert measured["calls"] == 1
    assert json.loads(path.read_text())["machines"][f"{shared.machine_key()} | train probe block"]["speedup"] == 1.6


def test_wrong_typed_cache_entry_is_measured_again(measured):
    path = shared.amp_cache_path()
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"version": 1, "machines": {f"{shared.machine_key()} | train probe block": {"speedup": "fast"}}}))
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

    def broken(probe=None) -> dict[str, float]:
        raise RuntimeError("no bf16 kernel")

    monkeypatch.setattr(precision, "measure_cpu_bf16_speedup", broken)
    choice = precision.resolve_amp("auto", CPU)
    assert choice.dtype is None and "no bf16 kernel" in choice.reason
    with pytest.raises(RuntimeError, match="no bf16 kernel"):
        precision.resolve_amp("bf16", CPU)


# ------------------------------------------------------------------ inference precision
from s2unet.config import Config, ConfigError, config_from_dict  # noqa: E402
from s2unet.models.base import SegmentationModel  # noqa: E402
from s2unet.predict import Predictor  # noqa: E402

REAL_MEASURE_INFERENCE = shared.measure_inference  # conftest replaces it in every test


class CancellingModel(SegmentationModel):
    """Logit = conv(x0, 1.001 x0) with weights (1, -1) + 5e-4, i.e. 5e-4 - 1e-3 x0: positive on
    the darker half in fp32. bf16 autocast rounds both conv inputs alike (8 mantissa bits), so
    the difference mostly vanishes and most of the image is foreground: masks that do not agree.
    ``cancel=False`` is a plain thresholding conv whose masks bf16 keeps."""

    def __init__(self, cancel: bool = True) -> None:
        super().__init__()
        self.cancel = cancel
        self.conv = torch.nn.Conv2d(2, 1, 1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([1.0, -1.0]).view(1, 2, 1, 1) if cancel
                                   else torch.tensor([20.0, 0.0]).view(1, 2, 1, 1))
            self.conv.bias.fill_(5e-4 if cancel else -10.0)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        first = x[:, :1]
        return [self.conv(torch.cat([first, first * (1.001 if self.cancel else 1.0)], dim=1))]


def _cfg(encoder: str = "sam2.1_hiera_tiny", size: int = 32) -> Config:
    return config_from_dict({"model": {"encoder": encoder}, "data": {"image_size": size, "labels": ["lungs"]}})


@pytest.fixture
def inference_timings(monkeypatch, tmp_path):
    """Inject measured fp32 / bf16 times (the seam); the mask Dice stays the real one of the model."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    state = {"fp32_s": 1.0, "bf16_s": 1.0, "calls": 0}

    def measure(masks, image_size, batch, device):
        state["calls"] += 1
        real = REAL_MEASURE_INFERENCE(masks, image_size, batch, device)
        return {**real, "fp32_s": state["fp32_s"], "bf16_s": state["bf16_s"],
                "speedup": state["fp32_s"] / state["bf16_s"]}

    monkeypatch.setattr(shared, "measure_inference", measure)
    return state


@pytest.mark.parametrize("fp32_s, bf16_s", [(1.0, 0.4), (1.0, 0.86), (1.0, 0.88), (1.0, 1.0), (1.0, 3.0), (0.2, 2.5)])
def test_inference_choice_is_never_slower_than_fp32(inference_timings, fp32_s, bf16_s):
    inference_timings.update(fp32_s=fp32_s, bf16_s=bf16_s)
    choice = Predictor(CancellingModel(cancel=False), _cfg(), batch_size=2).precision
    chosen_s = bf16_s if choice.name == "bf16" else fp32_s
    assert chosen_s <= fp32_s
    assert choice.name == ("bf16" if fp32_s / bf16_s >= shared.BF16_MIN_SPEEDUP else "fp32")
    assert choice.measured["dice"] >= shared.MIN_MASK_DICE and f"{fp32_s / bf16_s:.2f}x" in choice.reason


def test_masks_disagreeing_below_the_bound_refuse_bf16_however_fast(inference_timings):
    inference_timings.update(fp32_s=1.0, bf16_s=0.1)  # 10x faster
    choice = Predictor(CancellingModel(), _cfg(), batch_size=2).precision
    assert choice.measured["dice"] < shared.MIN_MASK_DICE  # measured on the real forward, not injected
    assert choice.name == "fp32" and "mask Dice >= 0.995" in choice.reason


@pytest.mark.parametrize("speedup, dice, expected", [(1.15, 0.995, "bf16"), (1.149, 1.0, "fp32"), (3.0, 0.9949, "fp32")])
def test_decision_bounds(speedup, dice, expected):
    assert shared.decide_inference({"speedup": speedup, "dice": dice}).name == expected


def test_precision_override_wins_over_the_measurement(inference_timings):
    inference_timings.update(fp32_s=1.0, bf16_s=0.5)
    assert Predictor(CancellingModel(cancel=False), _cfg(), precision="fp32").precision.name == "fp32"
    inference_timings.update(fp32_s=1.0, bf16_s=5.0)
    forced = Predictor(CancellingModel(), _cfg(), precision="bf16")
    assert forced.precision.name == "bf16" and inference_timings["calls"] == 0
    # the forced precision is what the forward runs in: the cancelling model's mask goes mostly foreground
    image = np.linspace(0.0, 1.0, 32 * 32, dtype=np.float32).reshape(32, 32)
    assert forced.binarize(forced.predict_image(image)).mean() > 0.8
    fp32 = Predictor(CancellingModel(), _cfg(), precision="fp32")
    assert 0.3 < fp32.binarize(fp32.predict_image(image)).mean() < 0.7
    with pytest.raises(ValueError, match="precision 'fp16'"):
        Predictor(CancellingModel(), _cfg(), precision="fp16")


def test_inference_cache_separates_encoders_sizes_and_batches(inference_timings):
    model = CancellingModel(cancel=False)
    for cfg, batch in ((_cfg(), 2), (_cfg(), 2), (_cfg("mobilesam_tinyvit"), 2), (_cfg(size=64), 2), (_cfg(), 4)):
        Predictor(model, cfg, batch_size=batch).precision
    assert inference_timings["calls"] == 4  # the repeated configuration came from the cache
    keys = list(json.loads(shared.amp_cache_path().read_text())["machines"])
    assert any("mobilesam_tinyvit 32px batch 2" in k for k in keys)
    assert any("sam2.1_hiera_tiny 32px batch 2" in k for k in keys)


def test_training_probe_is_keyed_per_encoder_and_leaves_the_model_alone(monkeypatch, tmp_path):
    from s2unet.engine.precision import training_probe
    from s2unet.models import create_model_from_config

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    hiera, tinyvit = (training_probe(CancellingModel(), _cfg(e)) for e in ("sam2.1_hiera_tiny", "mobilesam_tinyvit"))
    assert hiera.key != tinyvit.key and "mobilesam_tinyvit" in tinyvit.key
    cfg = config_from_dict({"model": {"arch": "unet"}, "data": {"image_size": 32, "labels": ["lungs"]}})
    model = create_model_from_config(cfg).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    choice = precision.resolve_amp("auto", CPU, training_probe(model, cfg))
    assert "unet" in choice.reason and choice.name in ("fp32", "bf16")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # BN statistics too
    assert all(p.grad is None for p in model.parameters())
    saved = json.loads(shared.amp_cache_path().read_text())["machines"]
    assert list(saved) == [f"{shared.machine_key()} | train {training_probe(model, cfg).key}"]


def test_summary_records_the_inference_precision(monkeypatch, tmp_path):
    from PIL import Image

    from s2unet.inference import run as run_module
    from s2unet.inference import InferenceOptions, run_inference
    from s2unet.models.checkpoint import LoadedModel

    cfg = config_from_dict({"data": {"kind": "image", "image_size": 32, "labels": ["lungs"]}})
    monkeypatch.setattr(run_module, "load_model_checkpoint", lambda path, device: LoadedModel(CancellingModel(False), cfg, 0.5, {}))
    Image.fromarray((np.random.default_rng(0).random((40, 40)) * 255).astype(np.uint8)).save(tmp_path / "a.png")
    for mode in ("auto", "fp32"):
        summary = run_inference("fake.pt", tmp_path / "a.png", tmp_path / mode, InferenceOptions(show_progress=False, precision=mode))
        saved = json.loads((tmp_path / mode / "summary.json").read_text())["settings"]["precision"]
        assert saved == summary["settings"]["precision"]
        assert saved["precision"] == "fp32" and saved["reason"].startswith("inference precision fp32")
    assert saved["measured"] is None and "--precision fp32" in saved["reason"]
    assert json.loads((tmp_path / "auto" / "summary.json").read_text())["settings"]["precision"]["measured"]["speedup"] == 0.5
    with pytest.raises(ConfigError, match="--precision 'half'"):
        run_inference("fake.pt", tmp_path / "a.png", tmp_path / "bad", InferenceOptions(show_progress=False, precision="half"))
