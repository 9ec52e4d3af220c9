"""The shipped samples: the ILSVRC-layout set loads with the dataset code, boxes lie inside."""
from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from tests.helpers import ROOT

SAMPLES = ROOT / "samples"
ILSVRC = SAMPLES / "ILSVRC"


@pytest.fixture(scope="module")
def samples():
    from agcam import datasets
    return datasets.find_samples(str(ILSVRC))


def test_ilsvrc_samples_load(samples):
    from timm.data import ImageNetInfo
    wnids = ImageNetInfo().label_names()
    names = [s.name for s in samples]
    assert names == sorted(names) and len(names) >= 4
    for sample in samples:
        path = Path(sample.path)
        assert (path.parent.name, path.name) == (sample.wnid, f"{sample.name}.JPEG")
        assert wnids[sample.label] == sample.wnid
        assert sample.boxes, sample.name


def test_every_box_lies_inside_its_image(samples):
    for sample in samples:
        with Image.open(sample.path) as image:
            assert image.size == (sample.width, sample.height), sample.name
            assert image.mode == "RGB"
        for xmin, ymin, xmax, ymax in sample.boxes:
            assert 0 <= xmin < xmax <= sample.width, (sample.name, sample.boxes)
            assert 0 <= ymin < ymax <= sample.height, (sample.name, sample.boxes)


def test_flat_copies_and_the_two_object_image():
    """Every ILSVRC sample also ships as ``samples/<name>.jpg`` (same bytes), plus the composite
    the notebook's class-specific section uses."""
    for path in (ILSVRC / "Data" / "CLS-LOC" / "val").glob("*/*.JPEG"):
        assert (SAMPLES / f"{path.stem}.jpg").read_bytes() == path.read_bytes()
    with Image.open(SAMPLES / "cat_and_coffee.jpg") as image:
        assert image.size == (600, 300)
