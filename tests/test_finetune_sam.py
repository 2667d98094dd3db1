"""Fine-tuned prompted SAM (model.arch: prompted_sam): training prompts, which tensors each
trainable-part setting changes, small checkpoints that round-trip, refusals, and one tiny run
through the engine. A random LiteMedSAM-layout checkpoint stands in for the real file."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from s2unet.config import ConfigError, load_config
from s2unet.prompts import Prompts, box_around_mask
from s2unet.engine import trainer
from s2unet.models.checkpoint import atomic_save, load_model_checkpoint, model_payload
from s2unet.losses import build_loss
from s2unet.models import check_model_config, create_model_from_config
from s2unet.models.encoders import get_encoder_spec
from s2unet.models.prompted_sam import EMPTY_LOGIT, PromptedSam
from s2unet.models.sam_head import SamHead
from s2unet.weights import CheckpointNotFoundError

from test_train import make_volumes, tiny_train_cfg, train_log

SIZE = 32  # LiteMedSAM's stride is 4: an 8 x 8 embedding, 32 x 32 logits

SETTINGS = {  # the published ablation: encoder LoRA, decoder (full or LoRA), both
    "encoder_lora": ["model.attention_lora.enabled=true", "model.prompted.decoder=none"],
    "decoder_full": ["model.prompted.decoder=full"],
    "decoder_lora": ["model.prompted.decoder=lora"],
    "both": ["model.attention_lora.enabled=true", "model.prompted.decoder=full"],
}


@pytest.fixture(scope="module")
def sam_file(tmp_path_factory) -> Path:
    """A LiteMedSAM-layout checkpoint (SAM1 keys) with random weights."""
    torch.manual_seed(0)
    spec = get_encoder_spec("litemedsam_tinyvit")
    state = {"image_encoder." + k: v for k, v in spec.build(**spec.kwargs).state_dict().items()}
    for key, value in SamHead(320, 256).state_dict().items():
        key = key.replace(".mlp.layers.0.", ".mlp.lin1.").replace(".mlp.layers.1.", ".mlp.lin2.")
        state["image_encoder." + key if key.startswith("neck.") else key] = value
    path = tmp_path_factory.mktemp("sam") / "lite_medsam_random.pth"
    torch.save(state, path)
    return path


def prompted_cfg(sam_file: Path, *extra: str, out: Path = Path("runs")):
    return load_config(None, [
        "model.arch=prompted_sam", "model.encoder=litemedsam_tinyvit", f"model.weights={sam_file}",
        "model.adapter.placement=none", f"data.image_size={SIZE}", "loss.name=dice_focal", f"output_dir={out}",
        *extra,
    ])


def disc_batch(n: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Bright discs on a dark background and their masks, (n, 3, S, S) and (n, 1, S, S)."""
    yy, xx = np.mgrid[:SIZE, :SIZE]
    masks = np.stack([((yy - 14 - i) ** 2 + (xx - 16 + i) ** 2 <= 49) for i in range(n)]).astype(np.float32)
    images = np.repeat(0.2 + 0.6 * masks[:, None], 3, axis=1)
    return torch.from_numpy(images), torch.from_numpy(masks[:, None])


# ------------------------------------------------------------------------------------- prompts
def test_training_boxes_are_jittered_within_the_configured_share_of_the_box(sam_file) -> None:
    model = create_model_from_config(prompted_cfg(sam_file, "model.prompted.box_jitter=0.2"))
    _, masks = disc_batch(1)
    ref = masks[0, 0].numpy() > 0.5
    exact = box_around_mask(ref).boxes[0]
    side = np.array([exact[2] - exact[0] + 1, exact[3] - exact[1] + 1] * 2)
    rng = np.random.default_rng(0)
    shifts = np.stack([model.prompts_for(0, ref, rng).boxes[0] - exact for _ in range(200)])
    assert np.all(np.abs(shifts) <= 0.2 * side + 1e-4)
    assert np.abs(shifts).max() > 0.1 * side.max()  # the jitter is really drawn
    np.testing.assert_array_equal(model.prompts_for(0, ref, None).boxes[0], exact)  # prediction: exact box


def test_fixed_points_lie_inside_the_mean_training_mask(sam_file) -> None:
    model = create_model_from_config(prompted_cfg(sam_file, "model.prompted.prompt=mean_points", "model.prompted.n_points=3"))
    _, masks = disc_batch(4)

    class Masks(torch.utils.data.Dataset):
        augment = "an augmentation the mean must not see"

        def __len__(self) -> int:
            return len(masks)

        def __getitem__(self, i: int) -> dict:
            assert self.augment is None
            return {"mask": masks[i]}

    data = Masks()
    model.prepare(data)
    assert data.augment is not None  # given back
    region = masks.mean(0)[0].numpy() >= 0.5
    prompts = model.prompts_for(0, None, None)
    assert prompts.points.shape == (1, 3, 2) and not prompts.uses_ground_truth
    for x, y in prompts.points[0]:
        assert region[int(y), int(x)]


def test_prediction_with_fixed_points_before_they_are_derived_is_refused(sam_file) -> None:
    model = create_model_from_config(prompted_cfg(sam_file, "model.prompted.prompt=mean_points"))
    with pytest.raises(ValueError, match="never derived"):
        model.prompts_for(0, None, None)


def test_box_model_without_a_reference_is_refused(sam_file) -> None:
    model = create_model_from_config(prompted_cfg(sam_file)).eval()
    with pytest.raises(ValueError, match="box prompts"):
        model.predict_logits(disc_batch(1)[0])


def test_a_correction_click_lands_in_the_error_of_the_previous_round(sam_file, monkeypatch) -> None:
    model = create_model_from_config(prompted_cfg(sam_file, "model.prompted.clicks=1"))
    _, masks = disc_batch(1)
    ref = masks[0, 0].numpy() > 0.5
    seen: list[Prompts] = []

    def decode(embedding, prompts, mask_input=None):
        seen.append(prompts)
        low = torch.full((1, 1, SIZE, SIZE), -5.0)
        low[..., :, : SIZE // 2] = 5.0  # predicts the left half: misses the disc's right part
        return low

    monkeypatch.setattr(model, "decode", lambda embedding, high_res, prompts, mask_input=None: decode(
        embedding, prompts, mask_input))
    model._object_logits(torch.zeros(1, 256, 8, 8), [], model.prompts_for(0, ref, None), ref, rounds=1, size=SIZE)
    assert len(seen) == 2 and seen[0].points is None
    (x, y), label = seen[1].points[0, -1], seen[1].labels[0, -1]
    pred = np.zeros_like(ref)
    pred[:, : SIZE // 2] = True
    error = (ref & ~pred) if label == 1 else (pred & ~ref)
    assert error[int(y), int(x)]


def test_an_empty_reference_gives_no_prompt_and_an_empty_prediction(sam_file) -> None:
    model = create_model_from_config(prompted_cfg(sam_file)).eval()
    images, _ = disc_batch(1)
    logits = model.predict_logits(images, reference=torch.zeros(1, 1, SIZE, SIZE))
    assert torch.all(logits == EMPTY_LOGIT)


# --------------------------------------------------------------------------- trainable parts
def _intended(name: str, setting: str) -> bool:
    lora = "lora_" in name
    encoder_lora = name.startswith("backbone.") and lora
    decoder = name.startswith("mask_decoder.")
    decoder_full = decoder and not lora and not any(f".{h}." in name for h in ("iou_prediction_head", "pred_obj_score_head"))
    return {"encoder_lora": encoder_lora, "decoder_full": decoder_full, "decoder_lora": decoder and lora,
            "both": encoder_lora or decoder_full}[setting]


@pytest.mark.parametrize("setting", list(SETTINGS))
def test_a_fine_tuning_step_changes_only_the_parts_of_the_setting(sam_file, setting) -> None:
    cfg = prompted_cfg(sam_file, *SETTINGS[setting], "model.prompted.clicks=2")
    torch.manual_seed(0)
    model = create_model_from_config(cfg).train()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(_intended(n, setting) for n in trainable)
    assert model.parameter_counts()["trainable"] == sum(p.numel() for p in model.parameters() if p.requires_grad)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-2, weight_decay=0.0)
    images, masks = disc_batch(2)
    loss = build_loss(cfg.loss, multiclass=False)(model(images, masks), masks)
    loss.backward()
    optimizer.step()
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and changed <= trainable
    # LoRA's up-projection starts at zero, so its first step moves exactly the B matrices.
    if setting in ("encoder_lora", "decoder_lora"):
        assert all(".lora_B." in k for k in changed)
        assert {k for k in trainable if ".lora_B." in k} == changed


# ---------------------------------------------------------------------------------- checkpoints
def test_checkpoint_holds_only_what_trained_and_round_trips(sam_file, tmp_path) -> None:
    cfg = prompted_cfg(sam_file, *SETTINGS["both"], "model.prompted.decoder=lora", "model.prompted.prompt=mean_points")
    torch.manual_seed(0)
    model = create_model_from_config(cfg)
    with torch.no_grad():  # a trained state: every LoRA up-projection away from zero
        for name, p in model.named_parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    model.fit_fixed_points(disc_batch(2)[1].mean(0).numpy())
    atomic_save(model_payload(model, cfg, 0.4, {"dice": 0.5}), tmp_path / "best.pt")
    stored = torch.load(tmp_path / "best.pt", weights_only=True)["state_dict"]
    assert set(stored) == {n for n, p in model.named_parameters() if p.requires_grad} | {"fixed_points", "fixed_labels"}
    loaded = load_model_checkpoint(tmp_path / "best.pt")
    assert isinstance(loaded.model, PromptedSam) and loaded.threshold == 0.4
    images, _ = disc_batch(2)
    with torch.no_grad():
        np.testing.assert_array_equal(model.eval().predict_logits(images).numpy(),
                                      loaded.model.predict_logits(images).numpy())


def test_a_missing_base_weights_file_is_refused_naming_it(sam_file, tmp_path, monkeypatch) -> None:
    gone = tmp_path / "moved_away.pth"
    with pytest.raises(CheckpointNotFoundError, match="moved_away.pth"):
        check_model_config(prompted_cfg(gone))
    monkeypatch.setattr("s2unet.weights.weights_search_path", lambda: [])
    with pytest.raises(CheckpointNotFoundError, match="mobile_sam.pt"):
        check_model_config(load_config(None, ["model.arch=prompted_sam", "model.encoder=mobilesam_tinyvit",
                                              "model.adapter.placement=none"]))


@pytest.mark.parametrize("extra, message", [
    (["model.prompted.decoder=none"], "nothing would be trained"),
    (["model.adapter.placement=stage"], "model.adapter.placement"),
    (["model.encoder=sam2.1_hiera_tiny", "model.weights=random"], "model.weights"),
    (["model.encoder=dinov2"], "model.encoder"),
    (["data.task=multiclass", "data.num_classes=3"], "data.task"),
])
def test_prompted_config_errors_name_the_key(sam_file, extra, message) -> None:
    with pytest.raises(ConfigError, match=message):
        prompted_cfg(sam_file, *extra)


# ------------------------------------------------------------------------------------- engine
def test_a_tiny_run_trains_validates_with_boxes_and_saves_a_small_checkpoint(sam_file, tmp_path, capsys) -> None:
    volumes = make_volumes(tmp_path / "vols", size=48)
    cfg = tiny_train_cfg(volumes, tmp_path / "runs", *[
        "model.arch=prompted_sam", "model.encoder=litemedsam_tinyvit", f"model.weights={sam_file}",
        "model.adapter.placement=none", f"data.image_size={SIZE}", "model.prompted.decoder=lora",
        "model.prompted.clicks=1", "train.epochs=1", "train.steps_per_epoch=1", "train.threads=1",
        "loss.name=dice_focal",
    ])
    run = trainer.train(cfg)
    assert "oracle" in capsys.readouterr().err  # box-prompted validation scores are flagged
    val = [r for r in train_log(run) if r["kind"] == "val"]
    assert len(val) == 1 and 0.0 <= val[0]["dice"] <= 1.0
    loaded = load_model_checkpoint(run / "best.pt")
    assert torch.all(loaded.model.fixed_labels == 1)  # derived from the training masks
    assert (run / "best.pt").stat().st_size < 2_000_000  # the 6 M frozen tensors stay in the SAM file


# ----------------------------------------------------------------------------------------- SAM2
@pytest.fixture(scope="module")
def random_sam21_file(tmp_path_factory) -> Path:
    """An official-format SAM2.1 Hiera-T checkpoint built by the ``sam2`` package (random weights)."""
    from sam2.build_sam import build_sam2

    torch.manual_seed(0)
    state = build_sam2("configs/sam2.1/sam2.1_hiera_t.yaml", ckpt_path=None, device="cpu", mode="eval").state_dict()
    path = tmp_path_factory.mktemp("sam2") / "sam2.1_hiera_tiny.pt"
    torch.save({"model": state}, path)
    return path


@pytest.mark.parametrize("setting", ["decoder_full", "both"])
def test_sam2_fine_tuning_step_and_checkpoint_round_trip(random_sam21_file, tmp_path, setting) -> None:
    cfg = prompted_cfg(random_sam21_file, "model.encoder=sam2.1_hiera_tiny", "data.image_size=64",
                       *SETTINGS[setting], "model.prompted.clicks=1")
    torch.manual_seed(0)
    model = create_model_from_config(cfg).train()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert all(_intended(n, setting) for n in trainable) and "mask_decoder.conv_s0.weight" in trainable
    assert any(".trunk.blocks." in n for n in trainable) == (setting == "both")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    yy, xx = np.mgrid[:64, :64]
    masks = torch.from_numpy(((yy - 30) ** 2 + (xx - 34) ** 2 <= 200).astype(np.float32))[None, None]
    images = (0.2 + 0.6 * masks).repeat(1, 3, 1, 1)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.0)
    build_loss(cfg.loss, multiclass=False)(model(images, masks), masks).backward()
    optimizer.step()
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    # The decoder's projections of the high-resolution maps train with the decoder, also when
    # the encoder runs without gradients.
    assert changed <= trainable and "mask_decoder.conv_s0.weight" in changed
    atomic_save(model_payload(model, cfg, 0.5, {}), tmp_path / "best.pt")
    loaded = load_model_checkpoint(tmp_path / "best.pt")
    with torch.no_grad():
        np.testing.assert_array_equal(model.eval().predict_logits(images, masks).numpy(),
                                      loaded.model.predict_logits(images, masks).numpy())


def test_a_fine_tuned_checkpoint_answers_prompts_as_the_model_does(sam_file, tmp_path) -> None:
    from s2unet.baselines.finetuned_predictor import FineTunedPredictor

    cfg = prompted_cfg(sam_file, *SETTINGS["decoder_lora"])
    model = create_model_from_config(cfg).eval()
    atomic_save(model_payload(model, cfg, 0.3, {}), tmp_path / "best.pt")
    predictor = FineTunedPredictor(str(tmp_path / "best.pt"))
    images, masks = disc_batch(1)
    predictor.set_image(images[0].numpy().transpose(1, 2, 0))
    prob, low = predictor.predict_prompts(box_around_mask(masks[0, 0].numpy() > 0.5))
    with torch.no_grad():
        expected = torch.sigmoid(model.predict_logits(images, masks))[0, 0].numpy()
    assert low.shape == (1, 1, SIZE, SIZE) and predictor.trainable_parameters > 0
    # The tuned threshold (0.3) becomes 0.5 of the predictor's probabilities.
    np.testing.assert_array_equal(prob >= 0.5, expected >= 0.3)


def test_compare_runs_a_fine_tuned_checkpoint_with_each_prompt_source(sam_file, tmp_path) -> None:
    import csv
    import json

    from PIL import Image

    from s2unet.baselines.compare import run_compare

    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    images, masks = disc_batch(4)
    for i in range(4):
        Image.fromarray((images[i, 0].numpy() * 255).astype(np.uint8)).save(root / "images" / f"img{i}.png")
        Image.fromarray((masks[i, 0].numpy() * 255).astype(np.uint8)).save(root / "masks" / f"img{i}.png")
    data = {"kind": "image", "root": str(root), "labels": ["masks"], "image_size": SIZE,
            "split": {"mode": "list", "val": ["img2", "img3"]}}
    cfg = prompted_cfg(sam_file, *SETTINGS["decoder_lora"], f"data.root={root}", "data.labels=[masks]")
    atomic_save(model_payload(create_model_from_config(cfg), cfg, 0.5, {}), tmp_path / "best.pt")
    methods = "".join(f"  - {{name: {name}, predictor: finetuned, weights: {weights}, prompt: {prompt}}}\n"
                      for name, weights, prompt in [
                          ("ft-box", tmp_path / "best.pt", "box_whole"),
                          ("ft-fixed", tmp_path / "best.pt", "points_fixed_mean"),
                          ("ft-iter", tmp_path / "best.pt", "iterative"),
                          ("ft-missing", tmp_path / "gone.pt", "box_whole")])
    (tmp_path / "cmp.yaml").write_text(f"name: tiny\ndata: {json.dumps(data)}\nmethods:\n{methods}")
    out = run_compare(tmp_path / "cmp.yaml", tmp_path / "out")
    with (out / "comparison.csv").open() as f:
        rows = {r["method"]: r for r in csv.DictReader(f)}
    for name in ("ft-box", "ft-fixed", "ft-iter"):
        assert rows[name]["status"] == "ok" and rows[name]["kind"] == "fine-tuned", rows[name]
        assert int(rows[name]["trainable_parameters"]) > 0
    assert rows["ft-box"]["prompts_from_ground_truth"] == "yes" and rows["ft-fixed"]["prompts_from_ground_truth"] == "no"
    assert rows["ft-missing"]["status"] == "skipped" and "gone.pt" in rows["ft-missing"]["reason"]
    assert "## Click curves" in (out / "comparison.md").read_text()
