"""Small Pascal VOC 2012 and CUB-200-2011 trees made from the sample photos, for the tests.

    python -m tests.helpers.datasets OUT      # writes OUT/voc and OUT/cub

The trees have the real layouts and file formats; what each image stands for is in the tables
below (:data:`VOC_VAL`, :data:`VOC_TRAIN`, :data:`CUB_IMAGES`), with the counts the readers must
report in :data:`EXPECTED`. Covered: multi-class images (dropped), a difficult object of another
class (dropped: difficult objects count), a difficult object of the same class (kept, its box
too), several boxes per image, a CUB box touching three image borders and one with fractional
coordinates. Bad layouts (missing file, unknown class, listed but missing image) are made by the
tests from these trees.

:func:`make_ilsvrc_mirror` lays a listing's images, labels and boxes out in the ILSVRC layout
(``Data/CLS-LOC/val/<wnid>/<name>.JPEG`` + annotation XML; the wnid is the one whose ImageNet
index is the label), so that the ILSVRC reader gives the expected samples independently.
"""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

from PIL import Image, ImageOps

from tests.helpers.golden import GOLDEN_ILSVRC, ROOT

PHOTOS = {name: ROOT / "samples" / f"{name}.jpg"
          for name in ("camera", "cat_and_coffee", "chelsea", "coffee", "rocket")}

# (image id, photo, mirrored, [(class, (xmin, ymin, xmax, ymax), difficult), ...])
VocEntry = Tuple[str, str, bool, List[Tuple[str, Tuple[int, int, int, int], int]]]

VOC_VAL: List[VocEntry] = [
    ("2010_000001", "chelsea", False, [("cat", (50, 20, 400, 290), 0)]),
    ("2010_000002", "camera", False, [("person", (10, 10, 200, 500), 0),
                                      ("person", (300, 50, 500, 480), 1)]),
    # two classes: dropped
    ("2010_000003", "cat_and_coffee", False, [("cat", (10, 10, 300, 290), 0),
                                              ("diningtable", (320, 100, 590, 290), 0)]),
    # the second class only in a difficult object: dropped all the same
    ("2010_000004", "coffee", False, [("bottle", (100, 50, 500, 380), 0),
                                      ("chair", (0, 0, 50, 50), 1)]),
    ("2010_000005", "rocket", False, [("aeroplane", (250, 10, 400, 420), 0),
                                      ("aeroplane", (10, 300, 100, 400), 0),
                                      ("aeroplane", (500, 20, 630, 120), 0)]),
    # a difficult object of the same class: kept, with both boxes
    ("2010_000006", "coffee", True, [("bottle", (100, 50, 500, 380), 0),
                                     ("bottle", (20, 20, 90, 120), 1)]),
    ("2010_000007", "rocket", True, [("train", (0, 0, 639, 426), 0)]),
]
VOC_TRAIN: List[VocEntry] = [
    ("2010_000101", "chelsea", True, [("cat", (40, 10, 420, 295), 0)]),
    ("2010_000102", "camera", True, [("person", (20, 30, 480, 500), 0)]),
    ("2010_000103", "cat_and_coffee", False, [("cat", (10, 10, 300, 290), 0)]),
    ("2010_000104", "rocket", False, [("aeroplane", (250, 10, 400, 420), 0)]),
    ("2010_000105", "coffee", False, [("bottle", (100, 50, 500, 380), 0)]),
    ("2010_000106", "cat_and_coffee", True, [("diningtable", (0, 100, 280, 290), 0)]),
    ("2010_000107", "camera", False, [("person", (10, 10, 200, 500), 0)]),
    ("2010_000108", "rocket", True, [("aeroplane", (200, 5, 420, 426), 0)]),
    ("2010_000109", "coffee", True, [("bottle", (100, 50, 500, 380), 0),
                                     ("diningtable", (0, 300, 599, 399), 0)]),
]

# (image id, photo, mirrored, class id 1..200, is_training_image, "x y width height")
CUB_IMAGES: List[Tuple[int, str, bool, int, int, str]] = [
    (1, "chelsea", False, 5, 0, "50.0 20.0 350.0 270.0"),
    # touches the right, top and bottom borders of the 512 x 512 photo
    (2, "camera", False, 17, 0, "412.0 0.0 100.0 512.0"),
    # fractional: x = 102.9 scales to int(102.9 / 640 * 224) = 36, int(102) would give 35
    (3, "rocket", False, 200, 0, "102.9 10.5 300.25 400.0"),
    (4, "coffee", False, 1, 0, "100.0 50.0 400.0 330.0"),
    (5, "chelsea", True, 5, 1, "40.0 10.0 380.0 285.0"),
    (6, "camera", True, 17, 1, "0.0 0.0 200.0 512.0"),
    (7, "rocket", True, 200, 1, "200.0 5.0 220.0 421.0"),
    (8, "coffee", True, 1, 1, "100.0 50.0 400.0 330.0"),
    (9, "cat_and_coffee", False, 5, 1, "10.0 10.0 290.0 280.0"),
    (10, "cat_and_coffee", True, 5, 1, "300.0 10.0 290.0 280.0"),
    (11, "camera", False, 17, 1, "10.0 10.0 190.0 490.0"),
    (12, "rocket", False, 200, 1, "250.0 10.0 150.0 410.0"),
]
CUB_CLASSES = [f"{i:03d}.Bird_{i:03d}" for i in range(1, 201)]

#: what the readers must report on these trees
EXPECTED = {
    ("voc", "val"): {"listed": 7, "dropped": 2, "used": 5},
    ("voc", "train"): {"listed": 9, "dropped": 1, "used": 8},
    ("cub", "test"): {"listed": 4, "dropped": 0, "used": 4},
    ("cub", "train"): {"listed": 8, "dropped": 0, "used": 8},
}


def _photo(name: str, mirrored: bool) -> Image.Image:
    with Image.open(PHOTOS[name]) as image:
        image = image.convert("RGB")
    return ImageOps.mirror(image) if mirrored else image


def _write_photo(path: Path, name: str, mirrored: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if mirrored:
        _photo(name, True).save(path, quality=95)
    else:
        shutil.copyfile(PHOTOS[name], path)


def _coordinate(value) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def annotation_xml(filename: str, size: Tuple[int, int],
                   objects: Sequence[Tuple[str, Sequence[float], int]]) -> str:
    """A Pascal VOC annotation (the format of VOC and of ILSVRC's CLS-LOC boxes)."""
    parts = [f"<annotation><folder>fixture</folder><filename>{filename}</filename>",
             f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>"]
    for name, box, difficult in objects:
        coords = "".join(f"<{k}>{_coordinate(v)}</{k}>"
                         for k, v in zip(("xmin", "ymin", "xmax", "ymax"), box))
        parts.append(f"<object><name>{name}</name><pose>Unspecified</pose><truncated>0"
                     f"</truncated><difficult>{difficult}</difficult><bndbox>{coords}</bndbox>"
                     "</object>")
    return "".join(parts) + "</annotation>\n"


def make_voc(root) -> Path:
    """``root/VOCdevkit/VOC2012`` with :data:`VOC_VAL` and :data:`VOC_TRAIN`; returns ``root``."""
    root = Path(root)
    voc = root / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (voc / sub).mkdir(parents=True, exist_ok=True)
    for split, entries in (("val", VOC_VAL), ("train", VOC_TRAIN)):
        for image_id, photo, mirrored, objects in entries:
            _write_photo(voc / "JPEGImages" / f"{image_id}.jpg", photo, mirrored)
            size = _photo(photo, False).size
            (voc / "Annotations" / f"{image_id}.xml").write_text(
                annotation_xml(f"{image_id}.jpg", size, objects))
        (voc / "ImageSets" / "Main" / f"{split}.txt").write_text(
            "".join(f"{e[0]}\n" for e in entries))
    return root


def make_cub(root) -> Path:
    """``root/CUB_200_2011`` with :data:`CUB_IMAGES`; returns ``root``."""
    root = Path(root)
    cub = root / "CUB_200_2011"
    (cub / "images").mkdir(parents=True, exist_ok=True)
    lines: Dict[str, List[str]] = {k: [] for k in ("images", "labels", "split", "boxes")}
    for image_id, photo, mirrored, class_id, is_train, box in CUB_IMAGES:
        folder = CUB_CLASSES[class_id - 1]
        relative = f"{folder}/{folder.split('.', 1)[1]}_{image_id:04d}.jpg"
        _write_photo(cub / "images" / relative, photo, mirrored)
        lines["images"].append(f"{image_id} {relative}")
        lines["labels"].append(f"{image_id} {class_id}")
        lines["split"].append(f"{image_id} {is_train}")
        lines["boxes"].append(f"{image_id} {box}")
    for key, filename in (("images", "images.txt"), ("labels", "image_class_labels.txt"),
                          ("split", "train_test_split.txt"), ("boxes", "bounding_boxes.txt")):
        (cub / filename).write_text("\n".join(lines[key]) + "\n")
    (cub / "classes.txt").write_text("".join(f"{i} {name}\n"
                                             for i, name in enumerate(CUB_CLASSES, start=1)))
    return root


def make_ilsvrc_mirror(root, samples) -> Path:
    """The ``samples``' images, labels and boxes in the ILSVRC layout (layout (a) of
    :mod:`agcam.datasets.ilsvrc`): the folder is the wnid whose index is the label, the
    annotation carries the boxes in original pixels (as written: ``int(float(v))`` when read)."""
    from agcam.datasets.ilsvrc import ANNOTATION_DIR, IMAGE_DIR, IMAGENET_WNIDS
    root = Path(root)
    for sample in samples:
        wnid = IMAGENET_WNIDS[sample.label]
        target = root / IMAGE_DIR / wnid / f"{sample.name}.JPEG"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(sample.path, target)
        with Image.open(sample.path) as image:
            size = image.size
        xml = root / ANNOTATION_DIR / f"{sample.name}.xml"
        xml.parent.mkdir(parents=True, exist_ok=True)
        xml.write_text(annotation_xml(target.name, size, [(wnid, b, 0) for b in sample.boxes]))
    return root


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m tests.helpers.datasets OUT")
    out = Path(sys.argv[1])
    print(make_voc(out / "voc"), make_cub(out / "cub"))


VAL = os.path.join("Data", "CLS-LOC", "val")
ANN = os.path.join("Annotations", "CLS-LOC", "val")


def make_flat_layout(root, solution_csv=False, xml_wnid=None):
    """Layout (b) from the fixture: images flat in Data/CLS-LOC/val, extensions varied.

    With ``solution_csv`` the labels go into ``LOC_val_solution.csv``; ``xml_wnid`` overwrites
    the wnid the annotations name (to show which source the label comes from).
    """
    os.makedirs(os.path.join(root, VAL))
    shutil.copytree(os.path.join(GOLDEN_ILSVRC, ANN), os.path.join(root, ANN))
    extensions = [".JPEG", ".jpg", ".jpeg", ".Jpeg", ".JPG", ".jpeg"]
    rows = []
    for k, (dirpath, _, files) in enumerate(sorted(
            (d, s, f) for d, s, f in os.walk(os.path.join(GOLDEN_ILSVRC, VAL)) if f)):
        for name in files:
            stem = os.path.splitext(name)[0]
            ext = extensions[int(stem[-1]) - 1]
            shutil.copy(os.path.join(dirpath, name), os.path.join(root, VAL, stem + ext))
            rows.append((stem, os.path.basename(dirpath)))
    if solution_csv:
        with open(os.path.join(root, "LOC_val_solution.csv"), "w") as handle:
            handle.write("ImageId,PredictionString\n")
            for stem, wnid in sorted(rows):
                handle.write(f"{stem},{wnid} 1 2 3 4 {wnid} 5 6 7 8 \n")
    if xml_wnid is not None:
        for name in os.listdir(os.path.join(root, ANN)):
            path = os.path.join(root, ANN, name)
            with open(path) as handle:
                text = handle.read()
            for _, wnid in rows:
                text = text.replace(f"<name>{wnid}</name>", f"<name>{xml_wnid}</name>")
            with open(path, "w") as handle:
                handle.write(text)
    return str(root)
