"""localization.py --maxboxacc on the golden ILSVRC set and the VOC and CUB trees: the script's
MaxBoxAcc / MaxBoxAccV2 equal a direct computation from each image's label-class map, every image
counts, the paper's metrics do not move, torchrun gives the same counts."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

import localization as script
from agcam.datasets import DATASETS, ValDataset, list_split
from agcam.evaluation.wsol import BoxAccuracy, accumulate_maps
from agcam.registry import get_explainer
from models import create_model
from tests.helpers import GOLDEN_ILSVRC, GOLDEN_MODEL_NAME, GOLDEN_WEIGHTS, ROOT
from tests.helpers.datasets import make_cub, make_voc
from tests.helpers.scripts import run

LOADER_ARGS = ["--device", "cpu", "--num_workers", "0", "--no_progress"]
KEYS = ("maxboxacc", "maxboxacc_v2", "maxboxacc_delta", "maxboxacc_v2_delta",
        "maxboxacc_threshold", "maxboxacc_v2_threshold", "maxboxacc_images", "maxboxacc_step")


def direct(model, spec, data_root, method, step=0.01):
    """Each image alone, explained for its label, accumulated: what the script must report."""
    listing = list_split(spec, str(data_root))
    dataset = ValDataset(listing.samples, model, keep_image=False)
    explainer = get_explainer(method, model)
    accumulator = BoxAccuracy(step)
    for i, sample in enumerate(listing.samples):
        item = dataset[i]
        _, maps = explainer.explain(item["input"][None], target=sample.label)
        accumulate_maps(accumulator, maps, [sample.boxes], [item["size"]],
                        explainer.geometry.input_size)
    return accumulator.compute()


def check(summary, expected):
    assert summary["maxboxacc"] == expected["maxboxacc"]
    assert summary["maxboxacc_v2"] == expected["maxboxacc_v2"]
    for key in ("delta", "threshold"):
        assert summary[f"maxboxacc_{key}"] == expected[f"maxboxacc_{key}"]
        assert summary[f"maxboxacc_v2_{key}"] == expected[f"maxboxacc_v2_{key}"]
    assert summary["maxboxacc_images"] == expected["num_images"]


@pytest.mark.parametrize("method", ["agcam", "rollout"])
def test_golden_ilsvrc_equals_the_direct_computation(tmp_path, capsys, golden_model, method):
    """Batches of one (the maps to the bit); the misclassified sixth image counts, its map made
    for its label (AGCAM) or the class-free one (Rollout)."""
    args = ["--method", method, "--data_root", GOLDEN_ILSVRC, "--model", GOLDEN_MODEL_NAME,
            "--checkpoint", GOLDEN_WEIGHTS, "--batch_size", "1"] + LOADER_ARGS
    assert run(script, args + ["--maxboxacc", "--output", tmp_path / "with"]) == 0
    out = capsys.readouterr().out
    assert "maxboxacc" in out and "v2@70" in out
    assert run(script, args + ["--output", tmp_path / "without"]) == 0
    capsys.readouterr()
    summary = json.loads((tmp_path / "with" / f"localization_{method}.json").read_text())
    plain = json.loads((tmp_path / "without" / f"localization_{method}.json").read_text())
    assert summary["num_images"] == 5 and summary["maxboxacc_images"] == 6
    assert summary["results"] == plain["results"]        # the paper's metrics: unchanged
    assert "maxboxacc" not in plain
    check(summary, direct(golden_model, DATASETS["ilsvrc"], GOLDEN_ILSVRC, method))
    table = (tmp_path / "with" / "localization_table.csv").read_text().splitlines()
    assert table[0].endswith("maxboxacc,maxboxacc_v2,v2@30,v2@50,v2@70")


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    """VOC and CUB trees and a random tiny ViT with the data set's head (most images wrong:
    GT-known counts them all the same)."""
    root = tmp_path_factory.mktemp("wsol_trees")
    out = {}
    for name, make in (("voc", make_voc), ("cub", make_cub)):
        torch.manual_seed(0)
        model = create_model(GOLDEN_MODEL_NAME, pretrained=False,
                             num_classes=DATASETS[name].num_classes)
        checkpoint = root / f"{name}.pth"
        torch.save(model.state_dict(), checkpoint)
        out[name] = (make(root / name), checkpoint, model.eval())
    return out


@pytest.mark.parametrize("dataset", ["voc", "cub"])
def test_voc_and_cub_equal_the_direct_computation(tmp_path, capsys, trees, dataset):
    tree, checkpoint, model = trees[dataset]
    assert run(script, ["--dataset", dataset, "--data_root", tree, "--method", "agcam", "gae",
                        "--model", GOLDEN_MODEL_NAME, "--checkpoint", checkpoint,
                        "--batch_size", "1", "--maxboxacc", "--output", tmp_path]
               + LOADER_ARGS) == 0
    capsys.readouterr()
    for method in ("agcam", "gae"):
        summary = json.loads((tmp_path / f"localization_{method}.json").read_text())
        check(summary, direct(model, DATASETS[dataset], tree, method))


def test_finer_step_and_bad_step(tmp_path, capsys):
    args = ["--data_root", GOLDEN_ILSVRC, "--model", GOLDEN_MODEL_NAME, "--checkpoint",
            GOLDEN_WEIGHTS, "--maxboxacc"] + LOADER_ARGS
    assert run(script, args + ["--maxboxacc_step", "0.001", "--output", tmp_path]) == 0
    capsys.readouterr()
    summary = json.loads((tmp_path / "localization_agcam.json").read_text())
    assert summary["maxboxacc_step"] == 0.001 and summary["maxboxacc_images"] == 6
    assert run(script, args + ["--maxboxacc_step", "0.05"]) == 2
    err = capsys.readouterr().err
    assert "--maxboxacc_step 0.05: choose 0.01 or 0.001" in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_torchrun_two_processes_give_the_single_process_numbers(tmp_path, capsys):
    common = ["--method", "agcam", "--data_root", str(GOLDEN_ILSVRC), "--model",
              GOLDEN_MODEL_NAME, "--checkpoint", str(GOLDEN_WEIGHTS), "--batch_size", "1",
              "--maxboxacc"] + LOADER_ARGS
    assert run(script, common + ["--output", tmp_path / "single"]) == 0
    capsys.readouterr()
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node", "2", "localization.py"] + common + \
        ["--output", str(tmp_path / "dist")]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    single = json.loads((tmp_path / "single" / "localization_agcam.json").read_text())
    dist = json.loads((tmp_path / "dist" / "localization_agcam.json").read_text())
    for key in KEYS:
        assert dist[key] == single[key], key
