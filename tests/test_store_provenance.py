"""The store knows what made it: ABPC.py and perturbation.py from --h5_root alone, and a flag that
contradicts the store refused naming both."""
from __future__ import annotations

import contextlib
import io
import json

import ABPC
import perturbation
import save_h5
from agcam.store import open_store
from tests.helpers import GOLDEN_MODEL_NAME, GOLDEN_WEIGHTS
from tests.helpers.golden import GOLDEN_ILSVRC
from tests.helpers.scripts import run

MODEL = ["--model", GOLDEN_MODEL_NAME, "--checkpoint", str(GOLDEN_WEIGHTS)]
QUIET = ["--device", "cpu", "--no_progress"]


def quiet(script, argv):
    with contextlib.redirect_stdout(io.StringIO()):
        return run(script, argv)


def test_scoring_scripts_need_only_h5_root(tmp_path, capsys):
    root = tmp_path / "stores"
    assert quiet(save_h5, [*MODEL, *QUIET, "--method", "agcam", "--data_root", GOLDEN_ILSVRC,
                           "--num_workers", "0", "--limit", "3", "--out", root,
                           "--target", "predicted"]) == 0
    meta = open_store(str(root / "ILSVRC_agcam.hdf5")).meta
    assert meta.model == GOLDEN_MODEL_NAME and meta.checkpoint_path == str(GOLDEN_WEIGHTS)
    assert meta.data_root == str(GOLDEN_ILSVRC) and meta.split == "val"
    assert "Normalize" in meta.preprocessing and meta.target == "predicted"
    # nothing but the folder: model, checkpoint and data set from the store
    assert quiet(perturbation, [*QUIET, "--h5_root", root, "--test", "deletion",
                                "--file", "True"]) == 0
    alone = json.loads((root / "ILSVRC_agcam_perturbation.json").read_text())
    assert quiet(perturbation, [*MODEL, *QUIET, "--h5_root", root, "--test", "deletion",
                                "--dataset", "ilsvrc", "--file", "True"]) == 0
    flags = json.loads((root / "ILSVRC_agcam_perturbation.json").read_text())
    assert alone["tests"] == flags["tests"] and alone["num_images"] == 3
    capsys.readouterr()
    # a flag that contradicts the store: one line naming both
    assert run(perturbation, [*QUIET, "--h5_root", root, "--test", "deletion",
                              "--model", "vit_tiny_patch16_224"]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--model vit_tiny_patch16_224" in line and GOLDEN_MODEL_NAME in line
    assert run(ABPC, [*QUIET, "--h5_file", root / "ILSVRC_agcam.hdf5", "--dataset", "voc"]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "ilsvrc" in line and "voc" in line


def test_released_stores_still_read(capsys):
    """The authors' files record nothing: the model is named on the command line as before."""
    from tests.helpers.golden import GOLDEN
    assert quiet(ABPC, [*MODEL, *QUIET, "--h5_root", GOLDEN / "h5", "--limit", "1"]) == 0
