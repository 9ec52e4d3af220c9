"""The ImageNet-Segmentation reader (agcam.datasets.imagenet_seg) on v7.3-structured files with
known contents: the transposes, the cell indirection, the preprocessing and the bad files."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from agcam.datasets.common import DataError, normalize_images
from agcam.datasets.imagenet_seg import (
    SegmentationDataset,
    collate_segmentation,
    count_images,
    find_mat_file,
    read_pair,
)
from agcam.errors import UsageError
from models.vit import Geometry
from tests.helpers.imagenet_seg import (
    FIXTURE,
    GOLDEN_ILSVRC,
    SCALE,
    ellipse_mask,
    golden_pairs,
    write_mat,
)

GEOMETRY = Geometry(input_size=(32, 48), grid=(2, 3), num_prefix_tokens=1,
                    mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))


@pytest.fixture(scope="module")
def known(tmp_path_factory):
    """Three pairs, none square, one grayscale, written in the v7.3 structure."""
    rng = np.random.default_rng(0)
    pairs = [(rng.integers(0, 256, (7, 11, 3), dtype=np.uint8),
              (rng.random((7, 11)) < 0.5).astype(np.uint8)),
             (rng.integers(0, 256, (13, 5, 3), dtype=np.uint8),
              (rng.random((13, 5)) < 0.3).astype(np.uint8)),
             (rng.integers(0, 256, (9, 6), dtype=np.uint8),
              (rng.random((9, 6)) < 0.6).astype(np.uint8))]
    path = tmp_path_factory.mktemp("seg") / "gtsegs_ijcv.mat"
    write_mat(path, pairs)
    return path, pairs


def test_reads_back_what_was_written(known):
    import h5py
    path, pairs = known
    assert count_images(str(path)) == 3
    with h5py.File(path, "r") as handle:
        for i, (image, mask) in enumerate(pairs):
            got_image, got_mask = read_pair(handle, i)
            assert np.array_equal(got_image, image) and np.array_equal(got_mask, mask)
    with open(path, "rb") as handle:
        assert handle.read(10) == b"MATLAB 7.3"


def test_items_are_the_resized_image_and_the_nearest_mask(known):
    """Input: PIL bilinear Resize((H, W)) then ToTensor/Normalize; mask: NEAREST."""
    path, pairs = known
    dataset = SegmentationDataset(str(path), GEOMETRY)
    for i, (image, mask) in enumerate(pairs):
        item = dataset[i]
        assert item["valid"] and item["size"] == (image.shape[1], image.shape[0])
        pil = Image.fromarray(image).convert("RGB")
        resized = TF.resize(pil, [32, 48], interpolation=InterpolationMode.BILINEAR)
        pixels = torch.from_numpy(np.array(resized)).permute(2, 0, 1)
        expected = normalize_images(pixels[None], GEOMETRY.mean, GEOMETRY.std)[0]
        assert torch.equal(item["input"], expected)
        nearest = np.array(Image.fromarray(mask).resize((48, 32), Image.NEAREST))
        assert np.array_equal(item["mask"].numpy(), nearest)
        assert set(np.unique(item["mask"].numpy())) <= {0, 1}
    batch = collate_segmentation([dataset[0], dataset[2]])
    assert batch["input"].shape == (2, 3, 32, 48) and batch["mask"].shape == (2, 32, 48)
    assert batch["index"].tolist() == [0, 2]
    assert len(SegmentationDataset(str(path), GEOMETRY, limit=2)) == 2


def test_committed_fixture_is_the_golden_photos_with_ellipse_masks():
    """Six images, none square, masks the ellipses of the annotation boxes (which depend only on
    the XML and the sizes, not on a JPEG decoder)."""
    import h5py
    assert count_images(str(FIXTURE)) == 6
    with h5py.File(FIXTURE, "r") as handle:
        for i, (name, image, mask) in enumerate(golden_pairs()):
            got_image, got_mask = read_pair(handle, i)
            assert got_image.shape == image.shape and got_image.shape[0] != got_image.shape[1]
            assert np.array_equal(got_mask, mask)
            assert 0 < got_mask.mean() < 1
    assert SCALE == (4, 5) and (GOLDEN_ILSVRC / "Annotations").is_dir()
    assert ellipse_mask(3, 3, [(0, 0, 2, 2)]).tolist() == [[0, 1, 0], [1, 1, 1], [0, 1, 0]]


def test_missing_or_bad_files_are_one_line_usage_errors(tmp_path, known):
    with pytest.raises(UsageError, match=r"--data_root .*: no gtsegs_ijcv.mat"):
        find_mat_file(str(tmp_path))
    with pytest.raises(DataError, match="no gtsegs_ijcv.mat"):
        find_mat_file(str(tmp_path / "missing.mat"))
    assert find_mat_file(str(known[0].parent)) == str(known[0])
    assert find_mat_file(str(known[0])) == str(known[0])
    bad = tmp_path / "gtsegs_ijcv.mat"
    bad.write_bytes(b"not hdf5")
    with pytest.raises(DataError, match="not a MATLAB v7.3"):
        count_images(find_mat_file(str(tmp_path)))


def test_a_mask_with_other_values_is_marked_invalid(tmp_path):
    path = tmp_path / "m.mat"
    write_mat(path, [(np.zeros((4, 5, 3), np.uint8), np.full((4, 5), 2, np.uint8))])
    item = SegmentationDataset(str(path), GEOMETRY)[0]
    assert not item["valid"] and "other than 0 and 1" in item["error"]
