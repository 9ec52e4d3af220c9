"""Chefer's perturbation test and RISE's insertion/deletion on the golden set: the engine's settings
against the two procedures written out here as the original scripts run them, the heatmap
recipe, perturbation.py's outputs and its bad-input exits."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import auc as sklearn_auc

import perturbation as script
import save_h5
from agcam.cli.common import script_entry
from agcam.datasets.common import normalize_images
from agcam.evaluation.curves import gkern, perturbation_curves
from agcam.evaluation.perturbation import (
    CHEFER_STEPS,
    chefer_test,
    make_tests,
    rise_test,
    summarize,
)
from agcam.maps import to_heatmap
from agcam.store import open_store
from tests.helpers import GOLDEN_ILSVRC, GOLDEN_MODEL_NAME, GOLDEN_WEIGHTS

MEAN = STD = (0.5, 0.5, 0.5)
MODEL_ARGS = ["--model", GOLDEN_MODEL_NAME, "--checkpoint", str(GOLDEN_WEIGHTS), "--device",
              "cpu", "--no_progress"]
METHODS = ("agcam", "rollout")


def run_script(argv):
    return script_entry(script.get_args_parser, script.main)(argv)


@pytest.fixture(scope="module")
def label_root(tmp_path_factory):
    """Compact stores of the label class's maps (save_h5.py's default), two methods."""
    root = tmp_path_factory.mktemp("label")
    argv = ["--method", *METHODS, "--data_root", str(GOLDEN_ILSVRC), "--save_root", str(root),
            "--num_workers", "0"] + MODEL_ARGS
    assert script_entry(save_h5.get_args_parser, save_h5.main)(argv) == 0
    return root


@pytest.fixture(scope="module")
def predicted_root(tmp_path_factory):
    """Compact stores of the predicted class's maps (``save_h5.py --target predicted``)."""
    root = tmp_path_factory.mktemp("predicted")
    argv = ["--method", *METHODS, "--data_root", str(GOLDEN_ILSVRC), "--save_root", str(root),
            "--num_workers", "0", "--target", "predicted"] + MODEL_ARGS
    assert script_entry(save_h5.get_args_parser, save_h5.main)(argv) == 0
    return root


@pytest.fixture(scope="module")
def golden_rows(label_root):
    """``(u8 images, labels, raw maps)`` of the agcam store."""
    with open_store(str(label_root / "ILSVRC_agcam.hdf5")) as store:
        batch = next(store.batches(6, (0.0,) * 3, (1.0,) * 3))
        u8 = (batch.images * 255).round().to(torch.uint8)
        return u8, list(store.labels), torch.from_numpy(store.raw_maps(range(6)))


class Batch:
    def __init__(self, images, heatmaps, labels):
        self.images, self.heatmaps = images, heatmaps
        self.labels = torch.as_tensor(labels)
        self.names = [f"i{i}" for i in range(len(images))]


# ------------------------------------------------------------------------------ heatmap

def test_chefer_heatmap_is_upsampling_by_the_patch_size_then_min_max():
    maps = torch.rand(3, 14, 14, generator=torch.Generator().manual_seed(0))
    for grid, patch in ((14, 16), (7, 32)):
        m = maps[:, :grid, :grid]
        scaled = F.interpolate(m[:, None], scale_factor=patch, mode="bilinear",
                               align_corners=False)[:, 0]
        flat = scaled.reshape(3, -1)
        low, high = flat.min(1).values[:, None, None], flat.max(1).values[:, None, None]
        expected = (scaled - low) / (high - low)
        assert torch.equal(to_heatmap(m, (grid * patch,) * 2, recipe="chefer"), expected)
    with pytest.raises(ValueError, match="recipe"):
        to_heatmap(maps, (224, 224), recipe="nearest")


# ------------------------------------------------------- Chefer's test, as his script runs it

def chefer_script_hits(model, images_u8, heatmaps, labels, negative):
    """``pertubation_eval_from_hdf5.py``'s loop, written out: [0, 1] images, ``topk`` of the
    (negated for negative) heatmap per step, 0 scattered in every channel, then normalised;
    top-1 against the label. Returns ``(clean hits, hits [images, 9])``."""
    data = images_u8.float().div(255)
    mean = torch.tensor(MEAN)[None, :, None, None]
    std = torch.tensor(STD)[None, :, None, None]
    target = torch.as_tensor(labels)
    with torch.no_grad():
        clean = (model((data.clone() - mean) / std).argmax(1) == target).numpy()
    vis = (-heatmaps if negative else heatmaps).reshape(len(data), -1)
    hits = np.zeros((len(data), len(CHEFER_STEPS)))
    for i, p in enumerate(CHEFER_STEPS):
        _, idx = torch.topk(vis, int(224 * 224 * p), dim=-1)
        removed = data.clone().reshape(len(data), 3, -1)
        removed.scatter_(-1, idx[:, None].repeat(1, 3, 1), 0)
        with torch.no_grad():
            out = model((removed.reshape(data.shape) - mean) / std)
        hits[:, i] = (out.argmax(1) == target).numpy()
    return clean, hits


@pytest.mark.parametrize("name", ["positive", "negative"])
def test_chefer_settings_give_the_scripts_hits(golden_model, golden_rows, name):
    images_u8, labels, maps = golden_rows
    heatmaps = to_heatmap(maps, (224, 224), recipe="chefer")
    clean, hits = chefer_script_hits(golden_model, images_u8, heatmaps, labels,
                                     negative=name == "negative")
    out = perturbation_curves(golden_model,
                              [Batch(normalize_images(images_u8, MEAN, STD), heatmaps, labels)],
                              [chefer_test(name, MEAN, STD)], batch_size=7)
    assert out.clean_correct == clean.astype(int).tolist()
    np.testing.assert_array_equal(out.curves[name], hits)
    # 1 clean + 9 steps per image, nothing shared
    assert out.forward_passes == 6 * 10


# ---------------------------------------------------------- RISE, as CausalMetric runs it

def rise_single_run(model, image, heatmap, mode, step):
    """``CausalMetric.single_run``, written out: the class is the clean top-1; the start image
    changes cumulatively, ``step`` pixels of the descending order at a time (ties: lower index
    first, the order the engine states); blur = conv2d with the 3 x 3 x 11 x 11 kernel whose
    diagonal is gkern(11, 5), padding 5; scores = softmax probabilities."""
    hw = image.shape[-1] * image.shape[-2]
    with torch.no_grad():
        c = int(model(image[None]).argmax())
    kern = torch.zeros(3, 3, 11, 11, dtype=image.dtype)
    for ch in range(3):
        kern[ch, ch] = torch.from_numpy(gkern(11, 5)).to(image.dtype)
    blurred = F.conv2d(image[None], kern, padding=5)[0]
    if mode == "del":
        start, finish = image.clone(), torch.zeros_like(image)
    else:
        start, finish = blurred, image.clone()
    n_steps = (hw + step - 1) // step
    order = np.argsort(-heatmap.reshape(-1).numpy(), kind="stable")
    scores = np.empty(n_steps + 1)
    flat_start, flat_finish = start.reshape(3, hw), finish.reshape(3, hw)
    for i in range(n_steps + 1):
        with torch.no_grad():
            scores[i] = float(model(flat_start.reshape(image.shape)[None]).softmax(1)[0, c])
        coords = torch.from_numpy(order[step * i:step * (i + 1)].copy())
        flat_start[:, coords] = flat_finish[:, coords]
    return scores


def test_rise_settings_give_causal_metrics_curves_in_float64(golden_model64, golden_rows):
    images_u8, labels, maps = golden_rows
    images = normalize_images(images_u8, MEAN, STD).double()[:3]
    heatmaps = to_heatmap(maps, (224, 224), recipe="chefer").double()[:3]
    step = 224 * 8
    tests = [rise_test("insertion", step), rise_test("deletion", step)]
    out = perturbation_curves(golden_model64, [Batch(images, heatmaps, labels[:3])], tests,
                              batch_size=16)
    for test, mode in zip(tests, ("ins", "del")):
        expected = np.stack([rise_single_run(golden_model64, images[i], heatmaps[i], mode, step)
                             for i in range(3)])
        assert expected.shape == (3, 29)
        np.testing.assert_allclose(out.curves[test.name], expected, rtol=0, atol=1e-12)
    # per image: clean; insertion: blurred + 27 mixed (the last is the clean image);
    # deletion: 27 mixed (the first is clean, the last the constant image): + 1 in all
    assert out.forward_passes == 3 * (1 + 28 + 27) + 1


def test_rise_default_step_is_eight_rows():
    tests = make_tests(["insertion", "deletion", "positive"], MEAN, STD, width=224)
    assert [t.steps.stride for t in tests[:2]] == [1792, 1792]
    assert make_tests(["deletion"], MEAN, STD, width=384)[0].steps.stride == 8 * 384
    with pytest.raises(ValueError, match="unknown test"):
        make_tests(["sideways"], MEAN, STD, 224)


# ----------------------------------------------------------------------------- the script

def test_script_tables_json_and_csv(label_root, capsys):
    argv = ["--method", *METHODS, "--h5_root", str(label_root), "--test", "positive",
            "negative", "--file", "True", "--csv", "True", "--batch_size", "20"] + MODEL_ARGS
    assert run_script(argv) == 0
    out = capsys.readouterr().out
    assert "positive perturbation (Chefer et al. 2021)" in out and "negative" in out
    for method in METHODS:
        saved = json.loads((label_root / f"ILSVRC_{method}_perturbation.json").read_text())
        assert set(saved) == {"method", "target", "num_images", "clean_accuracy", "tests",
                              "dataset", "heatmap"}
        assert saved["target"] == "label" and saved["num_images"] == 6
        assert saved["clean_accuracy"] == pytest.approx(5 / 6)     # the sixth is mislabelled
        for test in ("positive", "negative"):
            entry = saved["tests"][test]
            assert entry["steps"] == list(CHEFER_STEPS) and len(entry["curve"]) == 9
            x = [0.0] + entry["steps"] + [1.0]
            y = [saved["clean_accuracy"]] + entry["curve"] + [0.0]
            assert entry["auc"] == pytest.approx(100 * sklearn_auc(x, y), abs=1e-12)
            assert entry["auc_convention"] == "sklearn_0_1"
        text = (label_root / f"ILSVRC_{method}_perturbation.csv").read_text()
        rows = list(csv.reader(text.splitlines()))
        assert len(rows) == 7 and rows[0][:4] == ["name", "label", "prediction",
                                                  "clean_correct"]
        assert len(rows[0]) == 4 + 18 and rows[0][4] == "positive_5017"
        curve = np.array([[float(v) for v in r[4:13]] for r in rows[1:]]).mean(0)
        np.testing.assert_allclose(curve, saved["tests"]["positive"]["curve"], rtol=0,
                                   atol=1e-15)


def test_summary_of_the_other_auc_convention(label_root):
    argv = ["--method", "agcam", "--h5_root", str(label_root), "--test", "positive",
            "--auc", "trapezoid_0.1_0.9", "--file", "True"] + MODEL_ARGS
    assert run_script(argv) == 0
    entry = json.loads((label_root / "ILSVRC_agcam_perturbation.json").read_text())
    entry = entry["tests"]["positive"]
    assert entry["auc"] == pytest.approx(100 * sklearn_auc(entry["steps"], entry["curve"]))
    assert entry["auc_all_conventions"]["trapezoid_0.1_0.9"] == entry["auc"]


def test_unknown_test_is_one_line_and_exit_2(label_root, capsys):
    argv = ["--method", "agcam", "--h5_root", str(label_root), "--test", "sideways"]
    assert run_script(argv + MODEL_ARGS) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--test sideways" in err[0]


def test_insertion_on_a_label_store_is_one_line_and_exit_2(label_root, capsys):
    argv = ["--method", "agcam", "--h5_root", str(label_root), "--test", "insertion"]
    assert run_script(argv + MODEL_ARGS) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "label class" in err[0] and "--target predicted" in err[0]


def test_summarize_refuses_an_unknown_convention(golden_model, golden_rows):
    images_u8, labels, maps = golden_rows
    out = perturbation_curves(golden_model, [Batch(normalize_images(images_u8[:1], MEAN, STD),
                                                   to_heatmap(maps[:1], (224, 224)),
                                                   labels[:1])],
                              [chefer_test("positive", MEAN, STD)])
    with pytest.raises(ValueError, match="convention"):
        summarize(out, "agcam", "label", auc_convention="simpson")


# ------------------------------------------------------------------------ save_h5 --target

def test_save_h5_target_is_recorded_and_explains_that_class(label_root, predicted_root,
                                                             golden_model):
    from agcam import get_explainer
    with open_store(str(label_root / "ILSVRC_agcam.hdf5")) as label_store, \
            open_store(str(predicted_root / "ILSVRC_agcam.hdf5")) as top_store:
        assert label_store.meta.target == "label" and top_store.meta.target == "predicted"
        label_maps, top_maps = label_store.raw_maps(range(6)), top_store.raw_maps(range(6))
        inputs = next(top_store.batches(6, MEAN, STD)).images
    predictions, expected = get_explainer("agcam", golden_model).explain(inputs)
    assert predictions.tolist() == [label_store.labels[i] for i in range(5)] + \
        [label_store.labels[5] - 1]                          # the sixth is mislabelled
    np.testing.assert_allclose(top_maps, expected.numpy(), rtol=0, atol=1e-6)
    np.testing.assert_array_equal(top_maps[:5], label_maps[:5])    # same class: same maps
    assert not np.allclose(top_maps[5], label_maps[5])


def test_resuming_with_another_target_is_refused(label_root, tmp_path, capsys):
    import shutil
    shutil.copy(label_root / "ILSVRC_agcam.hdf5", tmp_path / "ILSVRC_agcam.hdf5")
    argv = ["--method", "agcam", "--data_root", str(GOLDEN_ILSVRC), "--save_root",
            str(tmp_path), "--num_workers", "0", "--target", "predicted"] + MODEL_ARGS
    assert script_entry(save_h5.get_args_parser, save_h5.main)(argv) == 2
    assert "target 'label' (this run: 'predicted')" in capsys.readouterr().err


def test_abpc_refuses_a_predicted_store(predicted_root, capsys):
    import ABPC
    argv = ["--method", "agcam", "--h5_root", str(predicted_root)] + MODEL_ARGS
    assert script_entry(ABPC.get_args_parser, ABPC.main)(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "predicted class" in err[0] and "ABPC needs" in err[0]


def test_script_runs_every_test_on_a_predicted_store(predicted_root, capsys):
    argv = ["--method", *METHODS, "--h5_root", str(predicted_root), "--test", "positive",
            "negative", "insertion", "deletion", "--file", "True", "--csv", "True"] + MODEL_ARGS
    assert run_script(argv) == 0
    out = capsys.readouterr().out
    assert "insertion (Petsiuk et al. 2018, RISE)" in out and "deletion" in out
    # per image: 1 clean + 9 + 9 (Chefer) + 28 (insertion) + 27 (deletion), + 1 for the run
    assert f"{(6 * 74 + 1) / 6:.2f} forward passes per image" in out
    for method in METHODS:
        saved = json.loads((predicted_root / f"ILSVRC_{method}_perturbation.json").read_text())
        assert saved["target"] == "predicted"
        assert list(saved["tests"]) == ["positive", "negative", "insertion", "deletion"]
        for test in ("insertion", "deletion"):
            entry = saved["tests"][test]
            assert len(entry["curve"]) == 29 and entry["pixels"][-1] == 224 * 224
            assert entry["steps"][0] == 0.0 and entry["steps"][-1] == 1.0
            assert entry["auc"] == pytest.approx(sklearn_auc(entry["steps"], entry["curve"]),
                                                 abs=1e-12)
        # insertion ends on the clean image, deletion starts there: the same probability
        assert saved["tests"]["insertion"]["curve"][-1] == saved["tests"]["deletion"]["curve"][0]


# ------------------------------------------------------------------------------- benchmark

@pytest.mark.slow
def test_benchmark_counts_forward_passes_and_agrees_with_the_loop(golden_model):
    from agcam.bench.perturbation import bench_perturbation
    from tests.helpers import PROBABILITY_ALLOWANCE
    report = bench_perturbation(golden_model, n_images=1, batch_size=64)
    expected = {"positive": (10, 10), "negative": (10, 10), "insertion": (29, 30),
                "deletion": (28 + 1, 30), "all": (74 + 1, 80)}
    for name, (batched, loop) in expected.items():
        assert report[name]["forward_passes_per_image"] == batched, name
        assert report[name]["loop_forward_passes_per_image"] == loop, name
        # probabilities: float32 rounding of two forward paths; top-1 hits: equal here
        assert report[name]["max_abs_difference_to_loop"] <= PROBABILITY_ALLOWANCE, name


def test_released_layout_ranks_its_stored_heatmap_with_a_warning(label_root, capsys):
    """The released layout keeps no raw maps: its antialiased heatmap is ranked instead, which
    gives the same hits as the compact store here (the same maps, other float rounding)."""
    from tests.helpers import GOLDEN
    argv = ["--method", "agcam", "--h5_file", str(GOLDEN / "h5" / "ILSVRC_agcam.hdf5"),
            "--test", "positive"] + MODEL_ARGS
    assert run_script(argv) == 0
    captured = capsys.readouterr()
    assert "released layout, which keeps no raw maps" in captured.err
    released_row = [line for line in captured.out.splitlines() if line.startswith("agcam ")]
    assert run_script(["--method", "agcam", "--h5_root", str(label_root), "--test",
                       "positive"] + MODEL_ARGS) == 0
    compact_row = [line for line in capsys.readouterr().out.splitlines()
                   if line.startswith("agcam ")]
    assert len(released_row) == 1 and released_row == compact_row
