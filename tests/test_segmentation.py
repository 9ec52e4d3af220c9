"""segmentation.py on the ImageNet-Segmentation fixture: the numbers against an independent
computation (the original's scale-factor upsampling, sklearn, plain counts), batching, torchrun
and bad input."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import average_precision_score

import segmentation as script
from agcam.datasets.imagenet_seg import SegmentationDataset, collate_segmentation
from agcam.maps import to_heatmap
from agcam.registry import get_explainer
from tests.helpers import GOLDEN_MODEL_NAME, GOLDEN_WEIGHTS, ROOT
from tests.helpers.imagenet_seg import FIXTURE
from tests.helpers.scripts import run

MODEL_ARGS = ["--model", GOLDEN_MODEL_NAME, "--checkpoint", str(GOLDEN_WEIGHTS), "--device",
              "cpu", "--num_workers", "0", "--no_progress"]


def run_script(argv):
    return run(script, argv)


def test_heatmap_recipe_is_the_scale_factor_interpolation():
    """The "localization" recipe to the input size is the original's F.interpolate(scale_factor
    =patch, bilinear) then min-max, to the bit."""
    maps = torch.rand(3, 14, 14, generator=torch.Generator().manual_seed(0))
    res = F.interpolate(maps[:, None], scale_factor=16, mode="bilinear")[:, 0]
    low = res.amin(dim=(1, 2), keepdim=True)
    high = res.amax(dim=(1, 2), keepdim=True)
    assert torch.equal(to_heatmap(maps, (224, 224), "localization"), (res - low) / (high - low))
    assert not to_heatmap(torch.ones(1, 2, 2), (8, 8), "localization").any()


def independent(model, method):
    """The test computed again without agcam.evaluation.segmentation: the original's upsampling
    call, the mean threshold, counts with numpy, AP with sklearn."""
    dataset = SegmentationDataset(str(FIXTURE), model)
    batch = collate_segmentation([dataset[i] for i in range(len(dataset))])
    _, maps = get_explainer(method, model).explain(batch["input"])
    res = F.interpolate(maps[:, None].float(), scale_factor=16, mode="bilinear")[:, 0]
    correct = labeled = 0
    inter, union, aps = np.zeros(2), np.zeros(2), []
    for r, g in zip(res, batch["mask"]):
        with np.errstate(invalid="ignore"):
            r = ((r - r.min()) / (r.max() - r.min())).numpy()   # a constant map: NaN, as there
        g = g.numpy().astype(bool)
        p = r > r.mean()                                       # NaN: all background, as there
        correct += np.sum(p == g)
        labeled += g.size
        for c, (pc, gc) in enumerate(((~p, ~g), (p, g))):
            inter[c] += np.sum(pc & gc)
            union[c] += np.sum(pc | gc)
        scores = np.nan_to_num(np.concatenate([1 - r.ravel(), r.ravel()]))   # NaN -> 0, as there
        aps.append(average_precision_score(np.concatenate([1 - g.ravel(), g.ravel()]), scores))
    eps = np.spacing(1)
    return {"pixel_accuracy": 100 * correct / (eps + labeled),
            "miou": 100 * np.mean(inter / (eps + union)), "map": 100 * np.mean(aps)}


@pytest.mark.parametrize("method", ["agcam", "rollout", "gradcam"])
def test_script_agrees_with_an_independent_computation(tmp_path, capsys, golden_model, method):
    """Grad-CAM's map is constant (all zero after its ReLU) on one fixture image: the original's
    NaN path."""
    # one batch of six, as the independent computation: the same float32 maps to the bit
    assert run_script(["--method", method, "--data_root", str(FIXTURE), "--batch_size", "6",
                       "--output", str(tmp_path)] + MODEL_ARGS) == 0
    out = capsys.readouterr().out
    assert "pixel_acc" in out and "mIoU" in out and "mAP" in out
    summary = json.loads((tmp_path / f"segmentation_{method}.json").read_text())
    assert summary["num_images"] == 6 and summary["unit"] == "percent"
    expected = independent(golden_model, method)
    for key in ("pixel_accuracy", "miou", "map"):
        assert summary[key] == pytest.approx(expected[key], abs=1e-9), key
    rows = (tmp_path / f"segmentation_{method}.csv").read_text().splitlines()
    assert len(rows) == 7 and rows[0].startswith("index,prediction")


def test_several_methods_batching_and_limit(tmp_path, capsys):
    """--method agcam gae in one run equals the single run of each (same batches: a float32 map
    may move in its last bit with the batch it is computed in, and AP with it)."""
    assert run_script(["--method", "agcam", "gae", "--data_root", str(FIXTURE.parent),
                       "--batch_size", "4", "--output", str(tmp_path / "both")]
                      + MODEL_ARGS) == 0
    assert run_script(["--method", "gae", "--data_root", str(FIXTURE), "--batch_size", "4",
                       "--output", str(tmp_path / "one")] + MODEL_ARGS) == 0
    assert run_script(["--method", "agcam", "--data_root", str(FIXTURE), "--limit", "2",
                       "--output", str(tmp_path / "two")] + MODEL_ARGS) == 0
    capsys.readouterr()
    both = json.loads((tmp_path / "both" / "segmentation_gae.json").read_text())
    one = json.loads((tmp_path / "one" / "segmentation_gae.json").read_text())
    for key in ("pixel_accuracy", "miou", "map", "iou", "num_images"):
        assert both[key] == one[key], key
    assert json.loads((tmp_path / "two" / "segmentation_agcam.json").read_text())[
        "num_images"] == 2
    table = (tmp_path / "both" / "segmentation_table.md").read_text()
    assert "| agcam | 6 |" in table and "| gae | 6 |" in table


@pytest.mark.parametrize("argv, message", [
    (["--data_root", "{tmp}"], "--data_root {tmp}: no gtsegs_ijcv.mat"),
    (["--data_root", "{tmp}/nothing.mat"], "--data_root {tmp}/nothing.mat: no gtsegs_ijcv.mat"),
    (["--data_root", "{tmp}/file.txt"], "not a MATLAB v7.3 (HDF5) file"),
    ([], "--data_root not given"),
    (["--data_root", str(FIXTURE), "--decode", "gpu"], "--decode gpu"),
    (["--data_root", str(FIXTURE), "--method", "nope"], "--method nope: unknown method"),
])
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, argv, message):
    (tmp_path / "file.txt").write_text("x")
    argv = [a.format(tmp=tmp_path) for a in argv]
    assert run_script(argv + MODEL_ARGS) == 2
    err = capsys.readouterr().err
    assert message.format(tmp=tmp_path) in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_torchrun_two_processes_give_the_single_process_numbers(tmp_path, capsys):
    """Batches of one image and one thread in every process, so that both runs compute the same
    float32 maps (another thread count may take another kernel and move a map's last bit, and
    the AP with it); the shards are then put back together into the single-process numbers, to
    the bit."""
    common = ["--method", "agcam", "--data_root", str(FIXTURE), "--batch_size", "1"] + MODEL_ARGS
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    single_run = subprocess.run([sys.executable, "segmentation.py"] + common
                                + ["--output", str(tmp_path / "single")], cwd=ROOT, env=env,
                                capture_output=True, text=True, timeout=300)
    assert single_run.returncode == 0, single_run.stderr[-3000:]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node", "2", "segmentation.py"] + common + \
        ["--output", str(tmp_path / "dist")]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    single = json.loads((tmp_path / "single" / "segmentation_agcam.json").read_text())
    dist = json.loads((tmp_path / "dist" / "segmentation_agcam.json").read_text())
    assert (single["world_size"], dist["world_size"]) == (1, 2)
    for key in ("pixel_accuracy", "miou", "map", "iou", "num_images"):
        assert dist[key] == single[key], key
    assert (tmp_path / "dist" / "segmentation_agcam.csv").read_text() == \
        (tmp_path / "single" / "segmentation_agcam.csv").read_text()
