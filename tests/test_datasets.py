"""Pascal VOC 2012 and CUB-200-2011: readers, scripts, agreement with the ILSVRC path, bad input.

The trees are written by tests/dataset_fixtures.py from the sample photos. The expected per-image
numbers are derived independently: the same images, labels and boxes are laid out in the ILSVRC
layout and run through the ILSVRC reader and the same evaluation code with the same model; the
VOC and CUB scripts must give the same numbers, to the bit. The ILSVRC *scripts* are not used for
that run because they (rightly) refuse a head of 20 or 200 classes; the label index is the same on
both sides because the mirror's class folder is the wnid whose ImageNet index is the label.
"""
from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

import ABPC as abpc_script
import localization as loc_script
import save_h5 as h5_script
from agcam.datasets import (
    DATASETS,
    DataError,
    ValDataset,
    find_samples,
    gt_boxes,
    list_split,
)
from agcam.datasets.common import make_loader
from agcam.evaluation.abpc import STEPS, abpc_curves
from agcam.evaluation.localization import evaluate
from agcam.registry import get_explainer
from agcam.store import open_store
from agcam.store.export import export_store, store_meta
from models import create_model
from tests.helpers import GOLDEN_MODEL_NAME, ROOT
from tests.helpers.datasets import EXPECTED, make_ilsvrc_mirror
from tests.helpers.scripts import run

THRESHOLDS = (0.5, 0.3)
NUM_CLASSES = {"voc": 20, "cub": 200}
#: the image whose CUB box has fractional coordinates (tests/dataset_fixtures.py)
FRACTIONAL = "Bird_200_0003"


def fitted_model(num_classes, samples, wrong, seed=0):
    """A random tiny ViT whose head is solved (least squares, float64) to classify ``samples``
    as their labels, except sample ``wrong``, given the next class: counted and misclassified
    images on every path."""
    torch.manual_seed(seed)
    model = create_model(GOLDEN_MODEL_NAME, pretrained=False, num_classes=num_classes)
    dataset = ValDataset(samples, model, keep_image=False)
    inputs = torch.stack([dataset[i]["input"] for i in range(len(dataset))])
    with torch.no_grad():
        features = model.forward_head(model.forward_features(inputs), pre_logits=True)
    targets = [s.label for s in samples]
    targets[wrong] = (targets[wrong] + 1) % num_classes
    wanted = torch.zeros(len(samples), num_classes, dtype=torch.float64)
    wanted[torch.arange(len(samples)), torch.tensor(targets)] = 10.0
    solution = torch.linalg.lstsq(features.double(), wanted, driver="gelsd").solution
    with torch.no_grad():
        model.head.weight.copy_(solution.T.float())
        model.head.bias.zero_()
        assert model(inputs).argmax(1).tolist() == targets
    return model, targets


@pytest.fixture(scope="module")
def setups(trees, tmp_path_factory):
    """Per data set: the tree, its evaluation listing, the model's checkpoint, the ILSVRC mirror."""
    out = {}
    for name, tree in trees.items():
        spec = DATASETS[name]
        listing = list_split(spec, str(tree))
        model, targets = fitted_model(spec.num_classes, listing.samples, wrong=1)
        folder = tmp_path_factory.mktemp(f"{name}_setup")
        checkpoint = folder / "model.pth"
        torch.save(model.state_dict(), checkpoint)
        mirror = make_ilsvrc_mirror(folder / "ILSVRC", listing.samples)
        out[name] = dict(tree=tree, listing=listing, checkpoint=checkpoint, mirror=mirror,
                         targets=targets, folder=folder)
    return out


def model_args(checkpoint, loader=True):
    return ["--model", GOLDEN_MODEL_NAME, "--checkpoint", checkpoint, "--device", "cpu",
            "--no_progress"] + (["--num_workers", "0"] if loader else [])


# -- readers ---------------------------------------------------------------------------------

@pytest.mark.parametrize("dataset, split", sorted(EXPECTED))
def test_counts_on_the_fixtures(trees, dataset, split):
    listing = list_split(DATASETS[dataset], str(trees[dataset]), split)
    expected = EXPECTED[(dataset, split)]
    assert listing.listed == expected["listed"]
    assert sum(listing.dropped.values()) == expected["dropped"]
    assert len(listing.samples) == expected["used"]
    assert [s.name for s in listing.samples] == sorted(s.name for s in listing.samples)


def test_voc_single_class_filter_labels_and_boxes(trees):
    root = trees["voc"]
    for data_root in (root, root / "VOCdevkit", root / "VOCdevkit" / "VOC2012"):
        listing = list_split(DATASETS["voc"], str(data_root), "val")
        assert listing.dropped == {"multi-class": 2}
    by_name = {s.name: s for s in listing.samples}
    # 2010_000003 (cat + diningtable) and 2010_000004 (bottle + a difficult chair) are dropped
    assert sorted(by_name) == ["2010_000001", "2010_000002", "2010_000005", "2010_000006",
                               "2010_000007"]
    assert [(s.class_name, s.label) for s in listing.samples] == [
        ("cat", 7), ("person", 14), ("aeroplane", 0), ("bottle", 4), ("train", 18)]
    # every object's box, difficult ones included
    assert by_name["2010_000002"].boxes == [(10, 10, 200, 500), (300, 50, 500, 480)]
    assert len(by_name["2010_000005"].boxes) == 3
    assert by_name["2010_000006"].boxes == [(100, 50, 500, 380), (20, 20, 90, 120)]
    assert listing.class_names[:3] == ("aeroplane", "bicycle", "bird")
    assert len(listing.class_names) == 20


def test_cub_labels_float_boxes_and_their_scaling(trees):
    listing = list_split(DATASETS["cub"], str(trees["cub"] / "CUB_200_2011"))
    assert listing.split == "test"
    by_name = {s.name: s for s in listing.samples}
    assert [(s.name, s.label) for s in listing.samples] == [
        ("Bird_001_0004", 0), ("Bird_005_0001", 4), ("Bird_017_0002", 16), (FRACTIONAL, 199)]
    assert len(listing.class_names) == 200 and listing.class_names[199] == "200.Bird_200"
    # x, y, width, height -> (x, y, x + width, y + height), floats kept
    assert by_name[FRACTIONAL].boxes == [(102.9, 10.5, 102.9 + 300.25, 410.5)]
    # the released int(x / width * W) on the floats: truncated once, after scaling
    (box,) = gt_boxes(by_name[FRACTIONAL].boxes, 640, 427, (224, 224))
    assert box == (int(102.9 / 640 * 224), int(10.5 / 427 * 224), int(403.15 / 640 * 224),
                   int(410.5 / 427 * 224)) == (36, 5, 141, 215)
    assert int(int(102.9) / 640 * 224) == 35          # what truncating first would give
    # a box touching the right, top and bottom borders reaches the input's last pixel
    (border,) = gt_boxes(by_name["Bird_017_0002"].boxes, 512, 512, (224, 224))
    assert border == (180, 0, 224, 224)
    item = ValDataset([by_name["Bird_017_0002"]], (224, 224) and create_model(
        GOLDEN_MODEL_NAME, pretrained=False, num_classes=200), keep_image=False)[0]
    assert item["boxes"] == [border]


def _break(tree, dataset, damage, tmp_path):
    root = tmp_path / dataset
    shutil.copytree(tree, root)
    if dataset == "voc":
        voc = root / "VOCdevkit" / "VOC2012"
        if damage == "unknown_class":
            xml = voc / "Annotations" / "2010_000007.xml"
            xml.write_text(xml.read_text().replace("<name>train</name>", "<name>cup</name>"))
            return root, f"{xml}: class 'cup' is not one of the 20 VOC classes"
        if damage == "missing_image":
            os.remove(voc / "JPEGImages" / "2010_000005.jpg")
            return root, "lists 2010_000005, which has no image"
        if damage == "missing_annotation":
            os.remove(voc / "Annotations" / "2010_000002.xml")
            return root, "lists 2010_000002, which has no annotation"
        if damage == "no_split_file":
            os.remove(voc / "ImageSets" / "Main" / "val.txt")
            return root, "no split file"
        if damage == "empty_split":
            (voc / "ImageSets" / "Main" / "val.txt").write_text("2010_000003\n2010_000004\n")
            return root, "no usable image in the voc val split (2 listed, 2 dropped as multi"
    cub = root / "CUB_200_2011"
    if damage == "no_bounding_boxes":
        os.remove(cub / "bounding_boxes.txt")
        return root, f"{cub / 'bounding_boxes.txt'}: missing"
    if damage == "missing_image":
        os.remove(cub / "images" / "017.Bird_017" / "Bird_017_0002.jpg")
        return root, "lists 017.Bird_017/Bird_017_0002.jpg (image 2), which is not there"
    if damage == "class_out_of_range":
        labels = cub / "image_class_labels.txt"
        labels.write_text(labels.read_text().replace("1 5\n", "1 201\n", 1))
        return root, "class '201' of image 1 is not in 1..200"
    raise AssertionError(damage)


@pytest.mark.parametrize("dataset, damage", [
    ("voc", "unknown_class"), ("voc", "missing_image"), ("voc", "missing_annotation"),
    ("voc", "no_split_file"), ("voc", "empty_split"),
    ("cub", "no_bounding_boxes"), ("cub", "missing_image"), ("cub", "class_out_of_range")])
def test_bad_layouts_exit_2_naming_the_file(trees, tmp_path, capsys, dataset, damage):
    root, message = _break(trees[dataset], dataset, damage, tmp_path)
    with pytest.raises(DataError, match="."):
        list_split(DATASETS[dataset], str(root))
    code = run(loc_script, ["--dataset", dataset, "--data_root", root, "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert message in err, err


@pytest.mark.parametrize("argv, message", [
    (["--dataset", "coco", "--data_root", "{voc}"], "--dataset coco: unknown data set; choose "
                                                    "from ilsvrc, voc, cub"),
    (["--dataset", "voc"], "--data_root not given: pass --data_root DIR, the folder holding "
                           "VOCdevkit/"),
    (["--dataset", "voc", "--data_root", "{voc}", "--split", "test"],
     "--split test: voc has the split(s) train, val"),
    (["--dataset", "ilsvrc", "--split", "train"], "--split train: ilsvrc has the split(s) val"),
    (["--dataset", "voc", "--data_root", "{cub}"], "not a Pascal VOC 2012 tree"),
    (["--dataset", "cub", "--data_root", "{voc}"], "not a CUB-200-2011 tree"),
])
def test_bad_flags_exit_2(trees, capsys, argv, message):
    argv = [a.format(voc=trees["voc"], cub=trees["cub"]) for a in argv]
    assert run(loc_script, argv + ["--device", "cpu"]) == 2
    assert message.format(voc=trees["voc"]) in capsys.readouterr().err


# -- the scripts against the ILSVRC path -------------------------------------------------------

def _rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize("dataset", ["voc", "cub"])
def test_localization_agrees_with_the_ilsvrc_path(setups, tmp_path, capsys, dataset):
    setup = setups[dataset]
    out = tmp_path / "out"
    code = run(loc_script, ["--dataset", dataset, "--data_root", setup["tree"], "--threshold",
                            *THRESHOLDS, "--batch_size", "2", "--output", out]
               + model_args(setup["checkpoint"]))
    printed = capsys.readouterr().out
    assert code == 0
    expected = EXPECTED[(dataset, DATASETS[dataset].eval_split)]
    assert (f"{expected['listed']} listed" in printed
            and f"{expected['used']} used" in printed)
    summary = json.loads((out / "localization_agcam.json").read_text())
    assert (summary["dataset"], summary["split"]) == (dataset, DATASETS[dataset].eval_split)
    assert (summary["num_images"], summary["skipped"], summary["misclassified"]) == \
        (expected["used"] - 1, 1, 1)
    rows = _rows(out / "localization_agcam.csv")
    assert {r["dataset"] for r in rows} == {dataset}

    # the ILSVRC path: the mirror read by the ILSVRC reader, the same model and batches
    samples = find_samples(str(setup["mirror"]))
    assert [(s.name, s.label) for s in samples] == \
        [(s.name, s.label) for s in setup["listing"].samples]
    model = create_model(GOLDEN_MODEL_NAME, checkpoint=str(setup["checkpoint"]))
    loader = make_loader(ValDataset(samples, model, keep_image=False), batch_size=2,
                         num_workers=0)
    results = evaluate(get_explainer("agcam", model), loader, samples, THRESHOLDS,
                       progress=False)
    assert [r.name for r in results] == [r["name"] for r in rows]
    compared, differences = 0, []
    for result, row in zip(results, rows):
        assert (str(result.label), str(result.prediction), str(int(result.counted))) == \
            (row["label"], row["prediction"], row["counted"])
        for key in map(repr, map(float, THRESHOLDS)):
            for metric, value in zip(("pixel_acc", "iou", "dice", "precision", "recall"),
                                     result.metrics.get(key, [])):
                mine = float(row[f"{metric}@{key}"])
                if result.name == FRACTIONAL:
                    differences.append(abs(mine - value))
                else:
                    assert mine == value, (result.name, metric, key)
                    compared += 1
    assert compared == 5 * len(THRESHOLDS) * (summary["num_images"]
                                              - (dataset == "cub"))
    note = ""
    if dataset == "cub":    # the fractional box: the ILSVRC reader truncates 102.9 to 102 first
        assert len(differences) == 5 * len(THRESHOLDS)
        note = f"; {FRACTIONAL} (fractional box): max difference {max(differences):.6g}"
    print(f"{dataset}: {compared} per-image values equal to the ILSVRC path{note}")


@pytest.mark.parametrize("dataset", ["voc", "cub"])
def test_save_h5_and_abpc_agree_with_the_ilsvrc_path(setups, tmp_path, capsys, dataset):
    setup = setups[dataset]
    prefix = DATASETS[dataset].prefix
    args = model_args(setup["checkpoint"])
    assert run(h5_script, ["--dataset", dataset, "--data_root", setup["tree"], "--save_root",
                           tmp_path, "--batch_size", "2"] + args) == 0
    path = tmp_path / f"{prefix}_agcam.hdf5"
    assert path.is_file()
    assert run(abpc_script, ["--dataset", dataset, "--h5_root", tmp_path, "--csv", "True",
                             "--file", "True"] + model_args(setup["checkpoint"], False)) == 0
    capsys.readouterr()
    report = json.loads((tmp_path / f"{prefix}_agcam_ABPC.json").read_text())
    assert report["dataset"] == dataset
    assert report["num_images"] == EXPECTED[(dataset, DATASETS[dataset].eval_split)]["used"]
    rows = _rows(tmp_path / f"{prefix}_agcam_ABPC.csv")

    # the ILSVRC path on the mirror, same model, same batches
    samples = find_samples(str(setup["mirror"]))
    model = create_model(GOLDEN_MODEL_NAME, checkpoint=str(setup["checkpoint"]))
    mirror_path = tmp_path / "mirror" / "ILSVRC_agcam.hdf5"
    mirror_path.parent.mkdir()
    export_store(get_explainer("agcam", model), ValDataset(samples, model), str(mirror_path),
                 "compact", store_meta("agcam", model, GOLDEN_MODEL_NAME, None, 2), log=print)
    with open_store(str(path)) as ours, open_store(str(mirror_path)) as mirror:
        assert ours.names == mirror.names and ours.labels == mirror.labels
        assert ours.meta.dataset == dataset and mirror.meta.dataset == "ilsvrc"
        assert np.array_equal(ours._file["images"][()], mirror._file["images"][()])
        assert np.array_equal(ours._file["maps"][()], mirror._file["maps"][()])
        curves = abpc_curves(model, mirror.batches(32, (0.5,) * 3, (0.5,) * 3), batch_size=64,
                             progress=False)
    assert [r["name"] for r in rows] == curves.names
    steps = [f"{s:.1f}" for s in STEPS]
    lerf = np.array([[float(r[f"lerf_{s}"]) for s in steps] for r in rows])
    morf = np.array([[float(r[f"morf_{s}"]) for s in steps] for r in rows])
    assert np.abs(lerf - curves.lerf).max() == 0 and np.abs(morf - curves.morf).max() == 0
    print(f"{dataset}: {lerf.size + morf.size} ABPC curve values equal to the ILSVRC path")


def test_head_must_fit_the_data_set(setups, tmp_path, capsys):
    from tests.helpers import GOLDEN_WEIGHTS
    voc = setups["voc"]
    # a 1000-class ImageNet head on VOC
    code = run(loc_script, ["--dataset", "voc", "--data_root", voc["tree"]]
               + model_args(GOLDEN_WEIGHTS))
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "the model's head has 1000 classes, --dataset voc has 20; fine-tune one with: " \
           "python -m agcam finetune --dataset voc" in err
    # a 20-class head on ILSVRC and on CUB
    assert run(loc_script, model_args(voc["checkpoint"])) == 2
    assert "has 20 classes, --dataset ilsvrc has 1000" in capsys.readouterr().err
    assert run(h5_script, ["--dataset", "cub", "--data_root", setups["cub"]["tree"],
                           "--save_root", tmp_path] + model_args(voc["checkpoint"])) == 2
    assert "has 20 classes, --dataset cub has 200" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.hdf5"))


def test_abpc_finds_the_file_by_data_set(setups, tmp_path, capsys):
    voc = setups["voc"]
    assert run(h5_script, ["--dataset", "voc", "--data_root", voc["tree"], "--save_root",
                           tmp_path, "--limit", "2"] + model_args(voc["checkpoint"])) == 0
    # the same command again: the ILSVRC resumption (nothing left to do)
    assert run(h5_script, ["--dataset", "voc", "--data_root", voc["tree"], "--save_root",
                           tmp_path, "--limit", "2"] + model_args(voc["checkpoint"])) == 0
    assert "VOC_agcam.hdf5 is already complete (2 images)" in capsys.readouterr().out
    args = model_args(voc["checkpoint"], False)
    capsys.readouterr()
    assert run(abpc_script, ["--dataset", "cub", "--h5_root", tmp_path] + args) == 2
    assert "no CUB_agcam.hdf5 there (write it with: python save_h5.py --dataset cub" in \
        capsys.readouterr().err
    h5_file = str(tmp_path / "VOC_agcam.hdf5")
    assert run(abpc_script, ["--dataset", "cub", "--h5_file", h5_file] + args) == 2
    assert "holds the voc data set, not --dataset cub" in capsys.readouterr().err
    # without --dataset the file's own is used (and the 20-class head fits it)
    assert run(abpc_script, ["--h5_file", h5_file, "--file", "True"] + args) == 0
    assert (tmp_path / "VOC_agcam_ABPC.json").is_file()


@pytest.mark.slow
def test_torchrun_voc_gives_the_single_process_numbers(setups, tmp_path, capsys):
    voc = setups["voc"]
    common = ["--dataset", "voc", "--data_root", str(voc["tree"]), "--batch_size", "2"] + \
        [str(a) for a in model_args(voc["checkpoint"])]
    assert run(loc_script, common + ["--output", tmp_path / "single"]) == 0
    capsys.readouterr()
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc_per_node", "2", "localization.py"] + common
                          + ["--output", str(tmp_path / "dist")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("data set voc val: 7 listed") == 1
    assert (tmp_path / "dist" / "localization_agcam.csv").read_text() == \
        (tmp_path / "single" / "localization_agcam.csv").read_text()
