"""The loader's settings and ``--decode gpu`` (run here on the CPU: the same code with
``decode_jpeg(device="cpu")``), against the released PIL path."""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

import localization as loc_script
from agcam.cli.common import MAX_DEFAULT_WORKERS, default_num_workers, script_entry
from agcam.datasets import find_samples
from agcam.datasets.common import (
    PREFETCH_FACTOR,
    Sample,
    ValDataset,
    loader_options,
    make_loader,
)
from agcam.datasets.decode import (
    DeviceDecoded,
    EncodedDataset,
    collate_encoded,
    resize_uint8,
)
from agcam.registry import get_explainer
from models.vit import model_geometry
from tests.helpers import GOLDEN_ILSVRC, GOLDEN_MODEL_NAME, GOLDEN_WEIGHTS

#: PIL resizes in 8-bit fixed point with a rounding between its two passes; the float path
#: rounds once. Each is within about one grey level of the exact value, so of each other
#: within two.
MAX_PIXEL_DIFF = 2


def test_default_workers_are_the_cores_at_most_16(monkeypatch):
    cores = len(os.sched_getaffinity(0))
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert default_num_workers() == max(1, min(MAX_DEFAULT_WORKERS, cores))
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)))
    assert default_num_workers() == 16
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")    # torchrun: 8 processes share 64 cores
    assert default_num_workers() == 8
    args = loc_script.get_args_parser().parse_args([])
    assert args.num_workers is None and args.decode == "pil" and args.precision == "fp32"
    loc_script.check_args(args)
    assert args.num_workers == 8


def test_loader_pins_and_prefetches():
    assert loader_options(4, True) == {"num_workers": 4, "pin_memory": True,
                                       "prefetch_factor": PREFETCH_FACTOR}
    assert loader_options(0, False) == {"num_workers": 0, "pin_memory": False}


def _both_paths(samples, geometry, batch_size=8):
    pil = next(iter(make_loader(ValDataset(samples, geometry), batch_size=batch_size,
                                num_workers=0)))
    dataset = EncodedDataset(samples, geometry)
    loader = make_loader(dataset, batch_size=batch_size, num_workers=0,
                         collate_fn=collate_encoded)
    device = next(iter(DeviceDecoded(loader, "cpu", geometry, keep_image=True)))
    return pil, device


def test_device_decode_is_close_to_pil_on_the_golden_images(golden_model):
    geometry = model_geometry(golden_model)
    samples = find_samples(str(GOLDEN_ILSVRC))
    pil, device = _both_paths(samples, geometry)
    for key in ("index", "label", "valid", "size"):
        assert torch.equal(pil[key], device[key]), key
    assert pil["boxes"] == device["boxes"]
    diff = (pil["image"].int() - device["image"].int()).abs()
    assert diff.max() <= MAX_PIXEL_DIFF and diff.float().mean() < 0.5
    # the model input is the same function of the uint8 pixels on both paths
    same = (diff.reshape(len(samples), -1) == 0).all(dim=1)
    assert torch.equal(pil["input"][same], device["input"][same])
    explainer = get_explainer("agcam", golden_model)
    predictions_pil, maps_pil = explainer.explain(pil["input"])
    predictions_dev, maps_dev = explainer.explain(device["input"])
    assert torch.equal(predictions_pil, predictions_dev)
    for a, b in zip(maps_pil, maps_dev):
        assert np.corrcoef(a.reshape(-1).double(), b.reshape(-1).double())[0, 1] >= 0.99


def test_resize_is_pils_bilinear_to_a_grey_level_or_two():
    image = torch.randint(0, 256, (3, 50, 70), generator=torch.Generator().manual_seed(0),
                          dtype=torch.uint8)
    assert torch.equal(resize_uint8(image, (50, 70)), image)
    for size in ((16, 24), (101, 33)):        # shrink (antialiased) and mixed
        ours = resize_uint8(image, size)
        theirs = TF.resize(Image.fromarray(image.permute(1, 2, 0).numpy()), list(size),
                           interpolation=InterpolationMode.BILINEAR)
        theirs = torch.from_numpy(np.array(theirs)).permute(2, 0, 1)
        assert ours.dtype == torch.uint8 and ours.shape == theirs.shape
        assert (ours.int() - theirs.int()).abs().max() <= MAX_PIXEL_DIFF


def test_other_files_take_the_pil_path_or_are_skipped_as_there(tmp_path, golden_model):
    geometry = model_geometry(golden_model)
    jpeg = next(GOLDEN_ILSVRC.rglob("*.jpeg"))
    rgb = Image.open(jpeg).convert("RGB")
    rgb.save(tmp_path / "a.png")
    rgb.convert("CMYK").save(tmp_path / "b.jpg")
    (tmp_path / "c.jpg").write_bytes(b"not an image at all")
    data = jpeg.read_bytes()
    (tmp_path / "d.jpg").write_bytes(data[:len(data) // 2])            # truncated JPEG
    shutil.copy(jpeg, tmp_path / "e.jpg")
    samples = [Sample(name=n, path=str(tmp_path / n), class_name="n01440764", label=0,
                      width=rgb.width,
                      height=rgb.height, boxes=[(0, 0, 10, 10)])
               for n in ("a.png", "b.jpg", "c.jpg", "d.jpg", "e.jpg")]
    dataset = EncodedDataset(samples, geometry)
    assert ["encoded" in dataset[i] for i in range(5)] == [False, False, False, True, True]
    pil, device = _both_paths(samples, geometry)
    assert pil["valid"].tolist() == device["valid"].tolist()
    assert pil["valid"].tolist()[:3] == [True, True, False]
    assert torch.equal(pil["image"][:2], device["image"][:2])    # the PIL path itself
    assert device["error"][2] and device["boxes"][2] == [] and device["size"][2].tolist() == [0, 0]
    if not device["valid"][3]:
        assert device["error"][3] and device["boxes"][3] == []


def test_localization_with_device_decode_on_the_cpu(tmp_path, capsys):
    argv = ["--method", "agcam", "--data_root", str(GOLDEN_ILSVRC), "--model", GOLDEN_MODEL_NAME,
            "--checkpoint", str(GOLDEN_WEIGHTS), "--device", "cpu", "--num_workers", "1",
            "--no_progress", "--batch_size", "4"]
    run = script_entry(loc_script.get_args_parser, loc_script.main)
    assert run(argv + ["--output", str(tmp_path / "pil")]) == 0
    assert run(argv + ["--decode", "gpu", "--output", str(tmp_path / "gpu")]) == 0
    pil = json.loads((tmp_path / "pil" / "localization_agcam.json").read_text())
    dev = json.loads((tmp_path / "gpu" / "localization_agcam.json").read_text())
    assert dev["decode"] == "gpu" and pil["decode"] == "pil"
    assert dev["num_images"] == pil["num_images"] and dev["skipped"] == pil["skipped"]
    for metric, value in pil["results"]["0.5"].items():
        assert abs(dev["results"]["0.5"][metric] - value) < 0.1, metric


@pytest.mark.cuda
def test_nvjpeg_decode_is_close_to_pil(golden_model):
    geometry = model_geometry(golden_model)
    samples = find_samples(str(GOLDEN_ILSVRC))
    pil = next(iter(make_loader(ValDataset(samples, geometry), batch_size=8, num_workers=0)))
    loader = make_loader(EncodedDataset(samples, geometry), batch_size=8, num_workers=0,
                         collate_fn=collate_encoded)
    device = next(iter(DeviceDecoded(loader, "cuda", geometry, keep_image=True)))
    assert device["input"].is_cuda and device["valid"].all()
    diff = (pil["image"].int() - device["image"].int()).abs().float()
    assert diff.mean() < 2.0
