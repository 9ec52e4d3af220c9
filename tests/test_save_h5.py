"""save_h5.py on the golden set: both layouts against the released files, the size budget,
interruption with SIGKILL and resumption, torchrun, bad input; then ABPC on our own files."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys

import h5py
import numpy as np
import pytest
import torch

import ABPC as abpc_script
import save_h5 as script
from agcam.cli.common import script_entry
from agcam.evaluation.abpc import abpc_curves, pixel_counts, removal_mask
from agcam.store import FORMAT, open_store
from tests.helpers import (
    GOLDEN,
    GOLDEN_ILSVRC,
    GOLDEN_MODEL_NAME,
    GOLDEN_WEIGHTS,
    PAPER_MAPS,
    PROBABILITY_ALLOWANCE,
    ROOT,
    heatmap_bands,
)
from tests.helpers.store import assert_same_content, read_all

METHODS = ("agcam", "lrp", "rollout")
LAYOUTS = ("compact", "released")
MEAN = STD = (0.5, 0.5, 0.5)
RELEASED_BYTES = 4_826_928   # each released fixture file, 6 images
MODEL_ARGS = ["--model", GOLDEN_MODEL_NAME, "--checkpoint", str(GOLDEN_WEIGHTS), "--device",
              "cpu", "--num_workers", "0", "--no_progress"]


def run_script(argv):
    return script_entry(script.get_args_parser, script.main)(argv)


def released_h5(method):
    return GOLDEN / "h5" / f"ILSVRC_{method}.hdf5"


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """save_h5.py on the golden set, once per (method, layout)."""
    cache = {}

    def get(method, layout="compact"):
        if (method, layout) not in cache:
            root = tmp_path_factory.mktemp(f"{method}_{layout}") / "saveroot"  # created by it
            argv = ["--method", method, "--save_root", str(root), "--data_root",
                    str(GOLDEN_ILSVRC), "--layout", layout, "--batch_size", "4"] + MODEL_ARGS
            assert run_script(argv) == 0
            cache[method, layout] = root / f"ILSVRC_{method}.hdf5"
        return cache[method, layout]
    return get


def read_rows(path):
    with open_store(str(path)) as store:
        store.check_complete()
        batch = next(store.batches(16, MEAN, STD))
    return batch


# ------------------------------------------------------------------- against the released files

@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("method", METHODS)
def test_heatmaps_images_and_labels_equal_the_released_files(saved, golden_reference,
                                                            golden_map_bounds, method, layout):
    ours, released = read_rows(saved(method, layout)), read_rows(released_h5(method))
    assert ours.names == released.names
    assert torch.equal(ours.labels, released.labels)
    # the model input, bit for bit (uint8 in our layout, float32 in the released one)
    assert torch.equal(ours.images, released.images)
    # Heatmaps: as far apart as maps within the float32 bounds of tests/conftest.py can make them
    # (for LRP's float-sensitive images that is most of [0, 1]; their float64 maps are exact).
    _, bounds = heatmap_bands(golden_reference[PAPER_MAPS[method]], golden_map_bounds(method),
                              (224, 224), antialias=True)
    errors = (ours.heatmaps - released.heatmaps).abs().amax(dim=(1, 2)).numpy()
    assert (errors <= bounds).all(), (errors.tolist(), bounds.tolist())


@pytest.mark.parametrize("method", ("agcam", "rollout"))
def test_released_layout_matches_the_released_file_dataset_for_dataset(saved, method):
    ours, theirs = read_all(saved(method, "released")), read_all(released_h5(method))
    assert set(ours) - {"@attrs"} == set(theirs) - {"@attrs"}
    for key, value in theirs.items():
        if key == "@attrs":
            continue
        assert ours[key].dtype == value.dtype and ours[key].shape == value.shape, key
        if not key.startswith("cam/"):
            assert np.array_equal(ours[key], value), key


def test_compact_file_is_at_most_a_quarter_of_the_released_bytes(saved):
    path = saved("agcam")
    ours = os.path.getsize(path) / 6
    released = os.path.getsize(released_h5("agcam")) / 6
    assert os.path.getsize(released_h5("agcam")) == RELEASED_BYTES
    print(f"bytes per image: ours {ours:,.0f}, released {released:,.0f} "
          f"({100 * ours / released:.1f}%)")
    assert ours <= 0.25 * released


def test_compact_file_describes_itself(saved):
    with h5py.File(saved("agcam"), "r") as f:
        attrs = dict(f.attrs)
        assert attrs["format"] == FORMAT and attrs["method"] == "agcam"
        assert attrs["model"] == GOLDEN_MODEL_NAME and attrs["complete"] == 1
        assert len(attrs["checkpoint_sha256"]) == 64
        assert list(attrs["input_size"]) == [224, 224] and list(attrs["grid"]) == [14, 14]
        assert list(attrs["mean"]) == list(attrs["std"]) == [0.5, 0.5, 0.5]
        assert attrs["timm_version"] and attrs["torch_version"]
        assert f["images"].dtype == np.uint8 and f["images"].chunks == (1, 3, 224, 224)
        assert f["maps"].shape == (6, 14, 14) and f["maps"].dtype == np.float32
        assert f["done"][()].all() and f["valid"][()].all()


# ------------------------------------------------------------------------- ABPC on our files

def _released_removal_differs(ours, released, image, step, most_relevant):
    k = pixel_counts(224 * 224)[step]
    a = removal_mask(ours.heatmaps[image].reshape(1, -1), k, most_relevant)
    b = removal_mask(released.heatmaps[image].reshape(1, -1), k, most_relevant)
    return not torch.equal(a, b)


@pytest.mark.parametrize("method", METHODS)
def test_abpc_on_our_file_differs_only_where_the_heatmap_ranks_other_pixels(
        saved, golden_model, golden_reference, method):
    """Every curve value whose removed pixels are the released ones is the released value (up to
    the float32 forward's rounding of the probability), on every image.

    The others come from the heatmap's float32 rounding (ours and the released code's), which
    moves pixels across a step's boundary: see README.md (Faithfulness: ABPC).
    """
    path = saved(method)
    with open_store(str(path)) as store:
        curves = abpc_curves(golden_model, store.batches(6, MEAN, STD), batch_size=64)
    ours, released = read_rows(path), read_rows(released_h5(method))
    same = 0
    for curve, most, key in ((curves.lerf, False, "lerf"), (curves.morf, True, "morf")):
        expected = golden_reference[f"abpc_{method}_{key}"].T
        for image in range(6):
            for step in range(11):
                if _released_removal_differs(ours, released, image, step, most):
                    continue
                same += 1
                assert abs(curve[image, step] - expected[image, step]) <= \
                    PROBABILITY_ALLOWANCE, (key, image, step)
    # steps 0 and 10 (nothing or everything removed) never depend on the ranking
    assert same >= 2 * 6 * 2


# ----------------------------------------------------------------- interruption and resumption

def _save_command(root, layout):
    return [sys.executable, "save_h5.py", "--method", "agcam", "--save_root", str(root),
            "--data_root", str(GOLDEN_ILSVRC), "--layout", layout, "--batch_size", "2"] \
        + MODEL_ARGS


#: save_h5.py with its store writer wrapped by the test: after the first committed unit it prints
#: "committed N" and sleeps, so that the test can SIGKILL it there (nothing in the project waits)
PAUSED_SAVE_H5 = """
import sys, time
import save_h5
from agcam.cli.common import script_entry
from agcam.store import export
real_open_writer = export.open_writer
def open_writer(*args, **kwargs):
    writer = real_open_writer(*args, **kwargs)
    write = writer.write
    def write_then_pause(indices, *rest):
        write(indices, *rest)
        print(f"committed {indices[-1] + 1} of {len(writer.names)}", flush=True)
        time.sleep(60)
    writer.write = write_then_pause
    return writer
export.open_writer = open_writer
sys.exit(script_entry(save_h5.get_args_parser, save_h5.main)(sys.argv[1:]))
"""


def _kill_after_first_unit(root, layout):
    """Start save_h5.py, SIGKILL it while it sleeps after its first committed unit."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    command = [sys.executable, "-c", PAUSED_SAVE_H5] + _save_command(root, layout)[2:]
    process = subprocess.Popen(command, cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        seen = []
        for line in process.stdout:
            seen.append(line)
            if line.startswith("committed"):
                break
        else:
            pytest.fail("save_h5.py ended before committing a unit:\n" + "".join(seen))
        assert line.startswith("committed 2 of 6")
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
        process.stdout.close()
    assert process.returncode == -signal.SIGKILL


@pytest.mark.parametrize("layout", LAYOUTS)
def test_sigkill_then_rerun_gives_the_uninterrupted_file(tmp_path, capsys, layout):
    _kill_after_first_unit(tmp_path / "killed", layout)
    name = "ILSVRC_agcam.hdf5"
    if layout == "compact":
        path = tmp_path / "killed" / name
        with open_store(str(path)) as store:
            assert not store.complete and store.missing == 4
    else:   # written under another name until complete
        assert not (tmp_path / "killed" / name).exists()
        assert (tmp_path / "killed" / (name + ".partial")).exists()
    argv = _save_command(tmp_path / "killed", layout)[2:]
    # what Ctrl-C reports at this point (save_h5.py's line after "interrupted:")
    args = script.get_args_parser().parse_args(argv)
    args.methods = ["agcam"]
    assert script.kept_after_interrupt(args) == (
        f"2 of 6 images of agcam kept in {tmp_path / 'killed'}; the same command continues "
        "where it stopped")
    assert run_script(argv) == 0
    assert "resuming" in capsys.readouterr().out
    assert run_script(_save_command(tmp_path / "whole", layout)[2:]) == 0
    assert_same_content(tmp_path / "killed" / name, tmp_path / "whole" / name)
    if layout == "compact":  # no structural write after creation: the very same bytes
        assert (tmp_path / "killed" / name).read_bytes() == \
            (tmp_path / "whole" / name).read_bytes()
    # once complete, a rerun has nothing to do
    assert run_script(argv) == 0
    assert "already complete" in capsys.readouterr().out


@pytest.mark.slow
def test_torchrun_two_processes_write_the_single_process_file(tmp_path, saved):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
               "2", "save_h5.py", "--method", "agcam", "--save_root", str(tmp_path),
               "--data_root", str(GOLDEN_ILSVRC), "--batch_size", "4"] + MODEL_ARGS
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("wrote ") == 1          # rank 0 alone writes and reports
    # same rows, same units; only the thread count differs (float bits of the maps)
    assert_same_content(tmp_path / "ILSVRC_agcam.hdf5", saved("agcam"), maps_atol=1e-6)


# ---------------------------------------------------------------------------------- bad input

def test_another_run_in_the_same_file_is_refused(saved, capsys):
    root = saved("agcam").parent
    argv = ["--method", "agcam", "--save_root", str(root), "--data_root", str(GOLDEN_ILSVRC),
            "--limit", "3"] + MODEL_ARGS
    assert run_script(argv) == 2
    assert "written by another run" in capsys.readouterr().err
    argv = ["--method", "agcam", "--save_root", str(root), "--data_root", str(GOLDEN_ILSVRC),
            "--layout", "released"] + MODEL_ARGS
    assert run_script(argv) == 2
    assert "not in the released layout" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--data_root", "{tmp}/nowhere"], "--data_root"),
    (["--method", "nope"], "--method nope: unknown method"),
    (["--batch_size", "0"], "--batch_size 0"),
    (["--save_root", "{tmp}/file"], "--save_root"),
])
def test_bad_input_exits_2_naming_the_flag(tmp_path, capsys, argv, message):
    (tmp_path / "file").write_text("not a directory")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    base = ["--save_root", str(tmp_path / "out"), "--data_root", str(GOLDEN_ILSVRC)]
    assert run_script(base + argv + MODEL_ARGS) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_missing_sample_set_is_explained(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(script, "SAMPLES_ROOT", str(tmp_path / "samples" / "ILSVRC"))
    assert run_script(["--save_root", str(tmp_path)] + MODEL_ARGS) == 2
    err = capsys.readouterr().err
    assert "--data_root" in err and "samples" in err


def test_unreadable_image_is_stored_invalid_and_left_out_of_abpc(tmp_path, capsys):
    data = tmp_path / "ILSVRC"
    shutil.copytree(GOLDEN_ILSVRC, data)
    broken = next(data.rglob("ILSVRC2012_val_00000003.jpeg"))
    broken.write_bytes(broken.read_bytes()[:200])      # truncated JPEG
    argv = ["--method", "agcam", "--save_root", str(tmp_path / "out"), "--data_root",
            str(data), "--batch_size", "4"] + MODEL_ARGS
    assert run_script(argv) == 0
    captured = capsys.readouterr()
    assert "1 unreadable" in captured.out and "ILSVRC2012_val_00000003" in captured.err
    with h5py.File(tmp_path / "out" / "ILSVRC_agcam.hdf5", "r") as f:
        assert f["valid"][()].tolist() == [1, 1, 0, 1, 1, 1] and f["done"][()].all()
    abpc = script_entry(abpc_script.get_args_parser, abpc_script.main)
    assert abpc(["--method", "agcam", "--h5_root", str(tmp_path / "out")] + MODEL_ARGS[:6]
                + ["--no_progress"]) == 0
    captured = capsys.readouterr()
    assert "number of images: 5" in captured.out
    assert "1 images stored as unreadable were left out" in captured.err


@pytest.mark.slow
def test_abpc_under_torchrun_gives_the_released_numbers(golden_json):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
               "2", "ABPC.py", "--method", "rollout", "--h5_file",
               str(released_h5("rollout"))] + MODEL_ARGS[:6] + ["--no_progress"]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    expected = golden_json["abpc"]["rollout"]
    assert done.stdout.count("number of images: 6") == 1           # rank 0 alone reports
    assert f"ABPC: {expected['abpc']:.6f}" in done.stdout
    assert f"AUC(LeRF): {expected['auc_lerf']:.6f}" in done.stdout
