"""python -m agcam finetune on the generated VOC and CUB trees: loss, checkpoint, resume,
torchrun, bad input."""
from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys

import pytest
import torch

import localization as loc_script
from agcam.cli import finetune
from tests.helpers import GOLDEN_MODEL_NAME, GOLDEN_WEIGHTS, ROOT
from tests.helpers.datasets import make_voc
from tests.helpers.scripts import run

#: start from the golden tiny model's weights (its 1000-class head is replaced)
BASE = ["--model", GOLDEN_MODEL_NAME, "--checkpoint", str(GOLDEN_WEIGHTS), "--device", "cpu",
        "--num_workers", "0", "--no_progress", "--warmup_epochs", "0", "--lr", "0.03"]


def _losses(text):
    before = float(re.search(r"epoch 0 \(before training\): val loss ([\d.]+)", text).group(1))
    after = [float(v) for v in re.findall(r"epoch \d+/\d+: .*val loss ([\d.]+)", text)]
    return before, after


@pytest.mark.slow
@pytest.mark.parametrize("dataset", ["voc", "cub"])
def test_two_steps_lower_the_loss_and_the_scripts_load_the_checkpoint(trees, tmp_path, capsys,
                                                                      dataset):
    out = tmp_path / "out"
    # 8 training images, batch 4: two steps; the loss is measured on the training images with
    # the evaluation preprocessing before and after them
    code = run(finetune, ["--dataset", dataset, "--data_root", trees[dataset], "--output", out,
                          "--epochs", "1", "--batch_size", "4", "--val_split", "train"] + BASE)
    printed = capsys.readouterr().out
    assert code == 0, printed
    before, (after,) = _losses(printed)
    classes = {"voc": 20, "cub": 200}[dataset]
    assert before == pytest.approx(math.log(classes), abs=1e-4)   # zero-initialised head
    assert after < before
    step = float(re.search(r"\(([\d.]+) s/step\)", printed).group(1))
    with capsys.disabled():
        print(f"\n{dataset}: loss {before:.4f} -> {after:.4f} after 2 steps, {step:.3f} s/step")

    meta = json.loads((out / "model.json").read_text())
    assert meta["dataset"] == dataset and len(meta["classes"]) == classes
    assert meta["recipe"]["opt"] == "sgd" and meta["recipe"]["epochs"] == 1
    state = torch.load(out / "model.pth", map_location="cpu", weights_only=True)
    assert state["model"]["head.weight"].shape[0] == classes
    assert state["classes"] == meta["classes"]

    code = run(loc_script, ["--dataset", dataset, "--data_root", trees[dataset], "--model",
                            GOLDEN_MODEL_NAME, "--checkpoint", out / "model.pth", "--device",
                            "cpu", "--num_workers", "0", "--no_progress"])
    assert code == 0
    assert "number of images:" in capsys.readouterr().out


def _command(trees, out, epochs=2):
    return [sys.executable, "-m", "agcam", "finetune", "--dataset", "voc", "--data_root",
            str(trees["voc"]), "--output", str(out), "--epochs", str(epochs), "--batch_size",
            "4", "--limit", "4", "--val_limit", "2"] + BASE


#: fine-tuning with its checkpoint writer wrapped by the test: SIGKILL right after last.pth of
#: epoch 1 is written (nothing in the project kills itself)
KILLED_AFTER_EPOCH_1 = """
import os, signal, sys
from agcam.__main__ import entry
from agcam.train import finetune
real_save = finetune._save
def save_then_kill(obj, path):
    real_save(obj, path)
    if path.endswith("last.pth") and obj.get("epoch") == 1:
        os.kill(os.getpid(), signal.SIGKILL)
finetune._save = save_then_kill
sys.exit(entry(sys.argv[1:]))
"""


@pytest.mark.slow
def test_resume_after_a_kill_ends_as_an_uninterrupted_run(trees, tmp_path, capsys):
    assert run(finetune, _command(trees, tmp_path / "whole")[4:]) == 0
    # the same threads as this process, so that the float results are the same
    env = dict(os.environ, OMP_NUM_THREADS=str(torch.get_num_threads()), PYTHONPATH=str(ROOT))
    killed = subprocess.run([sys.executable, "-c", KILLED_AFTER_EPOCH_1]
                            + _command(trees, tmp_path / "cut")[3:], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL
    assert (tmp_path / "cut" / "last.pth").is_file()
    assert not (tmp_path / "cut" / "model.pth").exists()
    capsys.readouterr()
    assert run(finetune, _command(trees, tmp_path / "cut")[4:]) == 0
    printed = capsys.readouterr().out
    assert "after epoch 1 of 2" in printed and "epoch 1/2:" not in printed
    a = torch.load(tmp_path / "whole" / "model.pth", weights_only=True)
    b = torch.load(tmp_path / "cut" / "model.pth", weights_only=True)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert [h["train_loss"] for h in a["history"][1:]] == \
        [h["train_loss"] for h in b["history"][1:]]
    # another recipe does not resume silently
    assert run(finetune, _command(trees, tmp_path / "cut", epochs=3)[4:]) == 2
    assert "was written with another recipe (epochs 2 (now 3))" in capsys.readouterr().err


@pytest.mark.slow
def test_torchrun_two_processes(trees, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
               "2", "-m", "agcam", "finetune", "--dataset", "cub", "--data_root",
               str(trees["cub"]), "--output", str(tmp_path), "--epochs", "1", "--batch_size",
               "2"] + BASE
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("epoch 1/1: train loss") == 1          # rank 0 reports
    assert "val accuracy" in done.stdout and "(4 images)" in done.stdout
    state = torch.load(tmp_path / "model.pth", weights_only=True)
    assert state["recipe"]["world_size"] == 2


@pytest.mark.parametrize("argv, message", [
    (["--dataset", "coco", "--data_root", "{voc}"], "--dataset coco: unknown data set"),
    (["--dataset", "ilsvrc", "--data_root", "{voc}"], "--dataset ilsvrc: nothing to fine-tune"),
    ([], "--dataset is required: voc or cub"),
    (["--dataset", "voc"], "--data_root not given"),
    (["--dataset", "voc", "--data_root", "{voc}", "--train_split", "val", "--limit", "0"],
     "--limit 0: must be at least 1"),
    (["--dataset", "voc", "--data_root", "{empty}"], "no usable image in the voc train split "
                                                     "(1 listed, 1 dropped as multi-class"),
    (["--dataset", "cub", "--data_root", "{voc}"], "not a CUB-200-2011 tree"),
])
def test_bad_input_exits_2(trees, tmp_path, capsys, argv, message):
    empty = make_voc(tmp_path / "empty")
    (empty / "VOCdevkit" / "VOC2012" / "ImageSets" / "Main" / "train.txt").write_text(
        "2010_000109\n")
    argv = [a.format(voc=trees["voc"], empty=empty) for a in argv]
    assert run(finetune, argv + ["--output", tmp_path / "out", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
