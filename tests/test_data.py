"""The ILSVRC validation reader: layouts, labels, boxes, preprocessing, shards."""
from __future__ import annotations

import os
import shutil

import pytest
import torch
from PIL import Image

from agcam.datasets import (
    IMAGENET_WNIDS,
    DataError,
    ValDataset,
    collate,
    find_samples,
    gt_boxes,
    make_loader,
    wnid_to_index,
)
from agcam.distributed import shard_indices
from models.vit import build_transform, load_image
from tests.helpers import GOLDEN_ILSVRC
from tests.helpers.datasets import ANN, VAL, make_flat_layout


def test_wnids_are_the_sorted_imagenet_classes():
    assert len(IMAGENET_WNIDS) == 1000
    assert list(IMAGENET_WNIDS) == sorted(IMAGENET_WNIDS)
    assert wnid_to_index("n01440764") == 0
    assert wnid_to_index("n15075141") == 999
    with pytest.raises(KeyError):
        wnid_to_index("n00000000")


def test_golden_samples(golden_json):
    samples = find_samples(str(GOLDEN_ILSVRC))
    assert [s.name for s in samples] == golden_json["names"]
    assert [s.label for s in samples] == golden_json["labels"]
    first = samples[0]
    assert (first.wnid, first.width, first.height) == ("n07718472", 451, 300)
    assert first.boxes == [(120, 20, 420, 300)]
    assert len(samples[1].boxes) == 2
    assert [s.name for s in find_samples(str(GOLDEN_ILSVRC), limit=2)] == golden_json["names"][:2]


def test_gt_boxes_truncate_as_released():
    assert gt_boxes([(120, 20, 420, 300)], 451, 300, (224, 224)) == [(59, 14, 208, 224)]
    # x scales with the width, y with the height, also for a non-square input
    assert gt_boxes([(50, 10, 100, 20)], 100, 40, (20, 10)) == [(5, 5, 10, 10)]


def test_flat_layout_labels_from_annotation_or_csv(tmp_path, golden_json):
    flat = find_samples(make_flat_layout(tmp_path / "b"))
    assert [s.name for s in flat] == golden_json["names"]
    assert [s.label for s in flat] == golden_json["labels"]
    # with LOC_val_solution.csv the label comes from there, not from the annotation
    other = IMAGENET_WNIDS[5]
    csv_root = make_flat_layout(tmp_path / "c", solution_csv=True, xml_wnid=other)
    assert [s.label for s in find_samples(csv_root)] == golden_json["labels"]
    os.remove(os.path.join(csv_root, "LOC_val_solution.csv"))
    assert {s.label for s in find_samples(csv_root)} == {5}


def test_dataset_gives_the_released_inputs(golden_model, golden_reference):
    samples = find_samples(str(GOLDEN_ILSVRC))
    dataset = ValDataset(samples, golden_model)
    batch = collate([dataset[i] for i in range(len(dataset))])
    assert batch["valid"].all()
    assert torch.equal(batch["input"], torch.from_numpy(golden_reference["inputs"]))
    assert batch["image"].dtype == torch.uint8
    to_tensor = build_transform(golden_model, normalize=False)
    for i, sample in enumerate(samples):
        assert torch.equal(batch["image"][i].float() / 255, to_tensor(load_image(sample.path)))
    assert batch["size"][0].tolist() == [451, 300]
    assert batch["boxes"][0] == [(59, 14, 208, 224)]
    assert batch["label"].tolist() == [s.label for s in samples]


def test_unreadable_image_is_an_invalid_item(tmp_path, golden_model):
    root = tmp_path / "ILSVRC"
    shutil.copytree(GOLDEN_ILSVRC, root)
    samples = find_samples(str(root))
    with open(samples[2].path, "wb") as handle:
        handle.write(b"not an image")
    with open(GOLDEN_ILSVRC / VAL / "n07718472" / "ILSVRC2012_val_00000001.jpeg", "rb") as h:
        jpeg = h.read()
    with open(samples[0].path, "wb") as handle:   # truncated JPEG
        handle.write(jpeg[: len(jpeg) // 3])
    dataset = ValDataset(samples, golden_model, keep_image=False)
    batch = collate([dataset[i] for i in range(len(dataset))])
    assert batch["valid"].tolist() == [False, True, False, True, True, True]
    assert "image" not in batch and batch["error"][2]
    assert batch["input"].shape == (6, 3, 224, 224)


def test_grey_png_is_converted_to_rgb(tmp_path, golden_model):
    root = tmp_path / "ILSVRC"
    shutil.copytree(GOLDEN_ILSVRC, root)
    sample = find_samples(str(root))[3]
    png = os.path.splitext(sample.path)[0] + ".PNG"
    Image.open(sample.path).convert("L").save(png)
    os.remove(sample.path)
    samples = find_samples(str(root))
    assert samples[3].path == png
    item = ValDataset(samples, golden_model)[3]
    assert item["valid"] and item["image"].shape == (3, 224, 224)
    assert torch.equal(item["image"][0], item["image"][2])


def test_shards_cover_every_item_once():
    shards = [shard_indices(11, rank, 3) for rank in range(3)]
    assert sorted(sum(shards, [])) == list(range(11))
    assert [len(s) for s in shards] == [4, 4, 3]
    assert shard_indices(2, 2, 3) == []
    samples = find_samples(str(GOLDEN_ILSVRC))
    from models.vit import Geometry
    geometry = Geometry((224, 224), (14, 14), 1, (0.5,) * 3, (0.5,) * 3)
    loader = make_loader(ValDataset(samples, geometry, keep_image=False), batch_size=4,
                         num_workers=0, rank=1, world_size=2)
    assert [b["index"].tolist() for b in loader] == [[1, 3, 5]]


@pytest.mark.parametrize("damage, message", [
    ("missing_root", "--data_root"),
    ("no_val_dir", "Data"),
    ("no_images", "no images"),
    ("no_annotation", "ILSVRC2012_val_00000004.xml"),
    ("bad_folder", "nfolder"),
    ("bad_xml", "ILSVRC2012_val_00000002.xml"),
])
def test_data_errors_name_the_file(tmp_path, damage, message):
    root = tmp_path / "ILSVRC"
    if damage != "missing_root":
        shutil.copytree(GOLDEN_ILSVRC, root)
    if damage == "no_val_dir":
        shutil.rmtree(root / "Data")
    elif damage == "no_images":
        shutil.rmtree(root / VAL)
        os.makedirs(root / VAL / "n01440764")
    elif damage == "no_annotation":
        os.remove(root / ANN / "ILSVRC2012_val_00000004.xml")
    elif damage == "bad_folder":
        os.rename(root / VAL / "n02422106", root / VAL / "nfolder")
    elif damage == "bad_xml":
        (root / ANN / "ILSVRC2012_val_00000002.xml").write_text("<annotation><size>")
    with pytest.raises(DataError, match=message):
        find_samples(str(root))


def test_unknown_wnid_in_annotation(tmp_path):
    root = make_flat_layout(tmp_path / "b", xml_wnid="n99999999")
    with pytest.raises(DataError, match=r"\.xml: unknown wnid 'n99999999'"):
        find_samples(root)
