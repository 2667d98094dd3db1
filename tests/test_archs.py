"""The architecture registry's capabilities, the config table that mirrors it, and the one strict
state-dict loader every model and encoder checkpoint goes through."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from s2unet.config import ARCH_TRAITS, ArchTraits, ConfigError, load_config
from s2unet.models import check_model_config, create_model, get_architecture
from s2unet.models.encoders import base as encoder_base
from s2unet.models.encoders import encoder_names, get_encoder_spec, register_encoder
from s2unet.models.sam_head import SamHead
from s2unet.predict.precision import model_key
from s2unet.weights import CheckpointError, load_state_strictly


def test_the_config_table_is_the_registry_s_traits() -> None:
    from s2unet.models.archs import base

    assert list(base._REGISTRY) == list(ARCH_TRAITS) == ["s2unet", "unet", "deeplabv3plus", "prompted_sam"]
    assert {name: get_architecture(name).traits for name in ARCH_TRAITS} == ARCH_TRAITS
    s2unet, unet, prompted = (get_architecture(n) for n in ("s2unet", "unet", "prompted_sam"))
    assert s2unet.takes_text and s2unet.caches_features and not s2unet.takes_prompts
    assert prompted.takes_prompts and prompted.takes_image_size and not prompted.caches_features
    assert unet.encoders == "none" and not unet.takes_text
    box, points = (load_config(None, [f"model.prompted.prompt={p}"]).model for p in ("box", "mean_points"))
    assert prompted.needs_reference(box) and not prompted.needs_reference(points) and not s2unet.needs_reference(box)


def test_a_second_different_declaration_of_an_architecture_is_refused() -> None:
    from s2unet.config import declare_arch_traits
    from s2unet.models.archs import register_architecture

    with pytest.raises(KeyError, match="registered twice"):
        register_architecture(get_architecture("unet"))
    with pytest.raises(KeyError, match="'unet' is declared with"):
        declare_arch_traits("unet", ArchTraits(takes_text=True))
    assert ARCH_TRAITS["unet"] == ArchTraits()
    with pytest.raises(KeyError, match="unknown architecture 'unett' \\(did you mean 'unet'\\?\\)"):
        get_architecture("unett")
    with pytest.raises(ConfigError, match="model.arch: 'unett' is not a registered architecture"):
        load_config(None, ["model.arch=unett"])


def test_the_prompted_encoders_are_those_carrying_a_sam_head(monkeypatch) -> None:
    prompted = ARCH_TRAITS["prompted_sam"]
    assert all(prompted.accepts_encoder(n) == (get_encoder_spec(n).sam_head is not None) for n in encoder_names())
    # an encoder the config's patterns let through but whose checkpoint has no SAM head
    monkeypatch.setattr(encoder_base, "_REGISTRY", dict(encoder_base._REGISTRY))
    register_encoder(dataclasses.replace(get_encoder_spec("sam2.1_hiera_tiny"), name="sam2_hiera_headless",
                                         checkpoint=None, sam_head=None))
    cfg = load_config(None, ["model.arch=prompted_sam", "model.encoder=sam2_hiera_headless",
                             "model.adapter.placement=none"])
    with pytest.raises(ConfigError, match="model.encoder 'sam2_hiera_headless': its checkpoint carries no SAM head"):
        check_model_config(cfg)


def test_capabilities_replace_name_tests() -> None:
    with pytest.raises(ValueError, match="text_model needs an architecture that takes text, not 'unet'"):
        create_model(out_channels=1, arch="unet", text_model="wordllama_l2_supercat")
    with pytest.raises(ValueError, match="prompted_sam needs image_size"):
        create_model(out_channels=1, arch="prompted_sam", encoder="litemedsam_tinyvit")
    assert model_key("unet", "sam2.1_hiera_tiny", 64, 2) == "unet - 64px batch 2"
    assert model_key("s2unet", "sam2.1_hiera_tiny", 64, 2) == "s2unet sam2.1_hiera_tiny 64px batch 2"


def test_a_trained_state_that_does_not_fit_is_one_checkpoint_error() -> None:
    model = create_model(out_channels=1, arch="unet")
    state = model.trained_state_dict()
    name = next(iter(state))
    wrong = {**state, name: torch.zeros(1), "extra.weight": torch.zeros(1)}
    with pytest.raises(CheckpointError, match=rf"best\.pt does not fit this model: {name} has shape \(1\) in the "
                                              r"file but .*; 1 unexpected keys such as extra\.weight"):
        model.load_trained_state_dict(wrong, "best.pt")
    del state[name]
    with pytest.raises(CheckpointError, match=rf"1 missing keys such as {name}"):
        model.load_trained_state_dict(state, "best.pt")


def test_the_strict_loader_loads_a_part_and_leaves_the_rest() -> None:
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1))
    before = net[1].weight.detach().clone()
    part = {"0.weight": torch.ones(2, 2), "0.bias": torch.zeros(2)}
    load_state_strictly(net, part, "f.pt", "the net", {k: v for k, v in net.state_dict().items() if k.startswith("0.")})
    assert torch.equal(net[0].weight, torch.ones(2, 2)) and torch.equal(net[1].weight, before)
    with pytest.raises(CheckpointError, match="f.pt does not fit the net: 2 missing keys such as 1.weight, 1.bias"):
        load_state_strictly(net, part, "f.pt", "the net")


def test_a_sam1_head_that_does_not_fit_names_the_file() -> None:
    head = SamHead(320, 64, 16)
    with pytest.raises(CheckpointError, match=r"lite\.pth does not fit the SAM neck / prompt encoder / mask decoder: "
                                              r"\d+ missing keys such as neck\."):
        head.load_sam1({}, "lite.pth")


def test_prompted_sam_reads_its_checkpoint_file_once(tmp_path, monkeypatch) -> None:
    """The trunk and the SAM head come from one read of the file (it was read twice)."""
    torch.manual_seed(0)
    spec = get_encoder_spec("litemedsam_tinyvit")
    state = {"image_encoder." + k: v for k, v in spec.build(**spec.kwargs).state_dict().items()}
    for key, value in SamHead(320, 64, 64).state_dict().items():
        key = key.replace(".mlp.layers.0.", ".mlp.lin1.").replace(".mlp.layers.1.", ".mlp.lin2.")
        state["image_encoder." + key if key.startswith("neck.") else key] = value
    torch.save(state, tmp_path / "lite.pth")
    reads, real_load = [], torch.load
    monkeypatch.setattr(torch, "load", lambda path, *a, **k: reads.append(path) or real_load(path, *a, **k))
    model = create_model(out_channels=1, arch="prompted_sam", encoder="litemedsam_tinyvit",
                         weights=str(tmp_path / "lite.pth"), adapter={"placement": "none"}, image_size=64)
    assert reads == [tmp_path / "lite.pth"]
    assert model.parameter_counts()["trainable"] > 0  # the mask decoder (model.prompted.decoder: full)
