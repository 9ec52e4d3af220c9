"""A small ImageNet-Segmentation file in the structure of ``gtsegs_ijcv.mat``, for the tests.

    python -m tests.helpers.imagenet_seg            # rewrites tests/fixtures/imagenet_seg/
    python -m tests.helpers.imagenet_seg OUT.mat    # writes it elsewhere

Made from the six golden photos (tests/fixtures/golden/ILSVRC), each scaled by 1/4 across and
1/5 down so that no image is square (a transposition mistake cannot go unseen); its mask is the
union of the ellipses inscribed in its annotation's boxes, scaled the same way.

The structure is MATLAB v7.3's (HDF5 behind a 512-byte MATLAB header), as the reader of
Chefer et al.'s ``data/Imagenet.py`` expects it: ``/value/img`` and ``/value/gt`` are ``[N, 1]``
arrays of object references; an image is stored ``[3, W, H]`` (column-major, read back transposed
to ``[H, W, 3]``); a ground truth is a cell, a ``[1, 1]`` array of references, whose element points
at the ``[W, H]`` uint8 mask. The referenced arrays live in ``/#refs#``, as MATLAB puts them.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Sequence, Tuple

import h5py
import numpy as np
from PIL import Image

from agcam.datasets.common import read_voc_xml
from tests.helpers.golden import GOLDEN_ILSVRC, ROOT

FIXTURE = ROOT / "tests" / "fixtures" / "imagenet_seg" / "gtsegs_ijcv.mat"
SCALE = (4, 5)   # width / 4, height / 5
HEADER = (b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Thu Jan  1 00:00:00 1970 "
          b"HDF5 schema 1.00 .")


def ellipse_mask(height: int, width: int, boxes: Sequence[Tuple[int, int, int, int]]
                 ) -> np.ndarray:
    """``[H, W]`` uint8: 1 inside the ellipse inscribed in any box ``(x0, y0, x1, y1)``
    (inclusive pixel coordinates), 0 elsewhere."""
    ys, xs = np.mgrid[0:height, 0:width]
    mask = np.zeros((height, width), dtype=bool)
    for x0, y0, x1, y1 in boxes:
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        rx, ry = max((x1 - x0) / 2, 0.5), max((y1 - y0) / 2, 0.5)
        mask |= ((xs - cx) / rx) ** 2 + ((ys - cy) / ry) ** 2 <= 1
    return mask.astype(np.uint8)


def golden_pairs() -> List[Tuple[str, np.ndarray, np.ndarray]]:
    """``(name, image [H, W, 3] uint8, mask [H, W] uint8)`` of every golden photo, by name."""
    pairs = []
    for path in sorted(GOLDEN_ILSVRC.glob("Data/CLS-LOC/val/*/*.jpeg"), key=lambda p: p.name):
        name = path.stem
        _, _, objects = read_voc_xml(str(GOLDEN_ILSVRC / "Annotations" / "CLS-LOC" / "val"
                                         / f"{name}.xml"))
        with Image.open(path) as photo:
            width, height = photo.size[0] // SCALE[0], photo.size[1] // SCALE[1]
            image = np.array(photo.convert("RGB").resize((width, height), Image.BILINEAR))
        boxes = [(x0 // SCALE[0], y0 // SCALE[1], min(x1 // SCALE[0], width - 1),
                  min(y1 // SCALE[1], height - 1)) for _, (x0, y0, x1, y1) in objects]
        pairs.append((name, image, ellipse_mask(height, width, boxes)))
    return pairs


def write_mat(path, pairs: Sequence[Tuple[np.ndarray, np.ndarray]]) -> None:
    """Write ``(image [H, W, 3] or [H, W] uint8, mask [H, W])`` pairs in the v7.3 structure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ref = h5py.special_dtype(ref=h5py.Reference)
    with h5py.File(path, "w", userblock_size=512) as handle:
        refs = handle.create_group("#refs#")
        value = handle.create_group("value")
        img = value.create_dataset("img", (len(pairs), 1), dtype=ref)
        gt = value.create_dataset("gt", (len(pairs), 1), dtype=ref)
        for name in ("img", "gt"):
            value[name].attrs["MATLAB_class"] = np.bytes_("cell")
        for i, (image, mask) in enumerate(pairs):
            image = np.asarray(image, dtype=np.uint8)
            stored = refs.create_dataset(f"img{i}", data=image.T, compression="gzip")
            stored.attrs["MATLAB_class"] = np.bytes_("uint8")
            img[i, 0] = stored.ref
            data = refs.create_dataset(f"mask{i}", data=np.asarray(mask, np.uint8).T,
                                       compression="gzip")
            data.attrs["MATLAB_class"] = np.bytes_("uint8")
            cell = refs.create_dataset(f"cell{i}", (1, 1), dtype=ref)
            cell.attrs["MATLAB_class"] = np.bytes_("cell")
            cell[0, 0] = data.ref
            gt[i, 0] = cell.ref
    with open(path, "r+b") as handle:   # the MATLAB header in the user block
        handle.write(HEADER.ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02" + b"IM")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    out = Path(argv[0]) if argv else FIXTURE
    pairs = golden_pairs()
    write_mat(out, [(image, mask) for _, image, mask in pairs])
    for name, image, mask in pairs:
        print(f"{name}: {image.shape[1]}x{image.shape[0]}, foreground {mask.mean():.3f}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
