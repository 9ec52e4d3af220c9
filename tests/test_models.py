"""The attention-exposing ViT: geometry from the model, weights, preprocessing."""
from __future__ import annotations

import os

import pytest
import torch

from agcam.cli.common import UsageError, model_from_args
from models import ModelError, WeightsUnavailableError, build_transform, create_model
from models.vit import load_image
from tests.helpers import GOLDEN_ILSVRC, GOLDEN_MODEL_NAME, GOLDEN_WEIGHTS


def test_preprocessing_matches_released_inputs(golden_model, golden_reference, golden_json):
    transform = build_transform(golden_model)
    paths = {p.name.split(".")[0]: p for p in GOLDEN_ILSVRC.glob("Data/CLS-LOC/val/*/*")}
    images = torch.stack([transform(load_image(str(paths[n]))) for n in golden_json["names"]])
    assert torch.equal(images, torch.from_numpy(golden_reference["inputs"]))


def test_checkpoint_formats(tmp_path, golden_model, golden_inputs):
    from safetensors.torch import save_file
    state = torch.load(GOLDEN_WEIGHTS, weights_only=True)
    with torch.no_grad():
        expected = golden_model(golden_inputs[:1])
    st_path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(st_path))
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"model": {f"module.{k}": v for k, v in state.items()}}, wrapped)
    for path in (st_path, wrapped):
        model = create_model(GOLDEN_MODEL_NAME, checkpoint=str(path))
        with torch.no_grad():
            assert torch.equal(model(golden_inputs[:1]), expected)


def test_bad_checkpoints_give_clear_errors(tmp_path):
    with pytest.raises(ModelError, match="no such file"):
        create_model(GOLDEN_MODEL_NAME, checkpoint=str(tmp_path / "missing.pth"))
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="garbage.pth"):
        create_model(GOLDEN_MODEL_NAME, checkpoint=str(garbage))
    with pytest.raises(ModelError, match="does not fit"):
        create_model("vit_tiny_patch16_224", checkpoint=str(GOLDEN_WEIGHTS))
    with pytest.raises(ModelError, match="unknown timm model"):
        create_model("vit_does_not_exist", pretrained=False)


def test_without_network_the_message_says_how_to_pass_weights(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as hf_constants
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HOME", os.devnull + "_nohub")
    with pytest.raises(WeightsUnavailableError) as info:
        create_model("vit_tiny_patch16_224.augreg_in21k_ft_in1k")
    message = str(info.value)
    assert "--checkpoint" in message and "hub" in message

    class Args:
        model = "vit_tiny_patch16_224.augreg_in21k_ft_in1k"
        checkpoint = None
        device = "cpu"
    with pytest.raises(UsageError, match="--checkpoint"):
        model_from_args(Args())


def test_default_is_the_papers_weights():
    import timm

    from models import DEFAULT_MODEL
    cfg = timm.models.get_pretrained_cfg(DEFAULT_MODEL)
    assert cfg.url.endswith("jx_vit_base_p16_224-80ecf9dd.pth")
    assert tuple(cfg.mean) == (0.5, 0.5, 0.5) and tuple(cfg.std) == (0.5, 0.5, 0.5)
