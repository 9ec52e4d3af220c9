"""ILSVRC 2012 validation set (the paper's Table 1): samples, labels, boxes.

Two layouts under ``data_root`` are read (both with ``Annotations/CLS-LOC/val/<name>.xml``,
Pascal VOC boxes in original pixels):

(a) the one the released scripts read: ``Data/CLS-LOC/val/<wnid>/<name>.<ext>``; the folder is
    the label;
(b) the official one: images flat in ``Data/CLS-LOC/val/``; the label is the first object's
    ``<name>`` in the annotation, or the image's entry in ``LOC_val_solution.csv`` at
    ``data_root`` when that file is there.

Extensions are matched case-insensitively (``.JPEG``, ``.jpeg``, ``.jpg``, ``.png``). The class
index is the position of the wnid among the 1000 sorted ImageNet wnids, never the order or number
of folders present (the released code took the unsorted ``os.listdir`` order).
"""
from __future__ import annotations

import csv
import os
from typing import Dict, List, Optional, Tuple

from timm.data import ImageNetInfo

from agcam.datasets.common import (
    IMAGE_EXTENSIONS,
    DataError,
    DatasetSpec,
    Listing,
    Sample,
    check_root,
    is_image_file,
    read_voc_xml,
)

__all__ = ["IMAGENET_WNIDS", "IMAGE_DIR", "ANNOTATION_DIR", "SOLUTION_CSV", "SPEC",
           "wnid_to_index", "find_samples", "list_samples"]

#: The 1000 ImageNet-1k wnids, sorted: a wnid's position is its class index.
IMAGENET_WNIDS: Tuple[str, ...] = tuple(sorted(ImageNetInfo().label_names()))
_WNID_INDEX: Dict[str, int] = {wnid: i for i, wnid in enumerate(IMAGENET_WNIDS)}

IMAGE_DIR = os.path.join("Data", "CLS-LOC", "val")
ANNOTATION_DIR = os.path.join("Annotations", "CLS-LOC", "val")
SOLUTION_CSV = "LOC_val_solution.csv"


def wnid_to_index(wnid: str) -> int:
    """Class index of an ImageNet wnid (``n01440764`` -> 0); ``KeyError`` for an unknown one."""
    return _WNID_INDEX[wnid]


def _list_images(image_dir: str) -> List[Tuple[str, str, Optional[str]]]:
    """``(name, path, folder wnid or None)`` of every image in layout (a) or (b), both allowed."""
    found = []
    with os.scandir(image_dir) as entries:
        for entry in entries:
            if entry.is_dir():
                if entry.name.startswith("."):
                    continue
                with os.scandir(entry.path) as inner:
                    images = [e for e in inner if e.is_file() and is_image_file(e.name)]
                if images and entry.name not in _WNID_INDEX:
                    raise DataError(f"{entry.path}: folder name is not an ImageNet wnid "
                                    "(layout Data/CLS-LOC/val/<wnid>/<image>)")
                found.extend((os.path.splitext(e.name)[0], e.path, entry.name) for e in images)
            elif entry.is_file() and is_image_file(entry.name):
                found.append((os.path.splitext(entry.name)[0], entry.path, None))
    return found


def _read_solution_csv(path: str) -> Dict[str, str]:
    """``LOC_val_solution.csv``: ``ImageId,PredictionString`` ("wnid x y x y wnid x y x y ...")."""
    labels: Dict[str, str] = {}
    try:
        with open(path, newline="") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if not header or [h.strip() for h in header[:2]] != ["ImageId", "PredictionString"]:
                raise DataError(f"{path}: expected the header ImageId,PredictionString")
            for line, row in enumerate(reader, start=2):
                if not row:
                    continue
                tokens = row[1].split() if len(row) > 1 else []
                if not tokens:
                    raise DataError(f"{path}:{line}: no wnid for {row[0]}")
                labels[row[0].strip()] = tokens[0]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: cannot be read ({exc})") from None
    return labels


def find_samples(data_root: str, limit: Optional[int] = None, flag: str = "--data_root"
                 ) -> List[Sample]:
    """Every validation image under ``data_root`` with its label and boxes, sorted by name.

    With ``limit``, only the first ``limit`` images (by name) are annotated and returned.
    Raises :class:`DataError` naming the flag or file for a missing or empty ``data_root``, an
    image without annotation, an unknown wnid, a malformed annotation or a duplicate name.
    """
    return _list(data_root, limit, flag)[0]


def _list(data_root: str, limit: Optional[int], flag: str) -> Tuple[List[Sample], int]:
    check_root(data_root, flag)
    image_dir = os.path.join(data_root, IMAGE_DIR)
    annotation_dir = os.path.join(data_root, ANNOTATION_DIR)
    if not os.path.isdir(image_dir):
        raise DataError(f"{flag} {data_root}: no {IMAGE_DIR} directory (expected "
                        f"{os.path.join(IMAGE_DIR, '<wnid>', '<image>')} or images directly "
                        f"in {IMAGE_DIR})")
    images = sorted(_list_images(image_dir))
    if not images:
        raise DataError(f"{flag} {data_root}: no images ({', '.join(IMAGE_EXTENSIONS)}) "
                        f"in {image_dir}")
    for (name, path, _), (next_name, next_path, _) in zip(images, images[1:]):
        if name == next_name:
            raise DataError(f"{path} and {next_path}: two images named {name}")
    listed = len(images)
    if limit is not None:
        images = images[:max(int(limit), 0)]
    if images and not os.path.isdir(annotation_dir):
        raise DataError(f"{flag} {data_root}: no {ANNOTATION_DIR} directory with the "
                        "annotations")
    csv_path = os.path.join(data_root, SOLUTION_CSV)
    solution = _read_solution_csv(csv_path) if os.path.isfile(csv_path) else None

    samples = []
    for name, path, folder in images:
        xml_path = os.path.join(annotation_dir, name + ".xml")
        if not os.path.isfile(xml_path):
            raise DataError(f"{path}: no annotation {xml_path}")
        width, height, objects = read_voc_xml(xml_path)
        if folder is not None:
            wnid, source = folder, os.path.dirname(path)
        elif solution is not None:
            if name not in solution:
                raise DataError(f"{csv_path}: no entry for {name}")
            wnid, source = solution[name], csv_path
        else:
            wnid, source = objects[0][0], xml_path
        if wnid not in _WNID_INDEX:
            raise DataError(f"{source}: unknown wnid {wnid!r} for {name} (not one of the 1000 "
                            "ImageNet classes)")
        samples.append(Sample(name=name, path=path, class_name=wnid, label=_WNID_INDEX[wnid],
                              width=width, height=height, boxes=[box for _, box in objects]))
    return samples, listed


def list_samples(data_root: str, split: str = "val", limit: Optional[int] = None,
                 flag: str = "--data_root") -> Listing:
    """:func:`find_samples` as the common interface's :class:`Listing` (split ``val`` only)."""
    samples, listed = _list(data_root, limit, flag)
    return Listing(dataset="ilsvrc", split=split, samples=samples, class_names=IMAGENET_WNIDS,
                   listed=listed)


SPEC = DatasetSpec(
    name="ilsvrc", prefix="ILSVRC",
    num_classes=len(IMAGENET_WNIDS), splits=("val",), eval_split="val", train_split=None,
    root_help="the ILSVRC root holding Data/CLS-LOC/val and Annotations/CLS-LOC/val",
    list_samples=list_samples)
