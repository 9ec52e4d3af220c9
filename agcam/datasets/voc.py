"""Pascal VOC 2012 (the paper's Table 2), single-class images only.

As the authors' ``PascalVOC2012Dataset_remove_multi_class`` (known from their compiled
leftovers): an image of the split is kept only when every ``<object>`` of its annotation,
difficult ones included, has the same ``<name>``; its label is that class's index among the 20
classes in the standard order (:data:`VOC_CLASSES`), its boxes are all its objects' boxes. The
others are dropped and counted (``Listing.dropped["multi-class"]``).

Layout: ``--data_root`` is the folder that holds ``VOCdevkit/``, ``VOCdevkit/`` itself or
``VOC2012/`` itself; read are ``JPEGImages/<id>.jpg``, ``Annotations/<id>.xml`` and
``ImageSets/Main/<split>.txt`` (one image id a line).
"""
from __future__ import annotations

import os
from typing import List, Optional

from agcam.datasets.common import (
    DataError,
    DatasetSpec,
    Listing,
    Sample,
    check_root,
    read_voc_xml,
)

__all__ = ["VOC_CLASSES", "SPEC", "find_voc_root", "list_samples"]

VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
               "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
               "sheep", "sofa", "train", "tvmonitor")
_CLASS_INDEX = {name: i for i, name in enumerate(VOC_CLASSES)}
_PARTS = ("JPEGImages", "Annotations", os.path.join("ImageSets", "Main"))
MULTI_CLASS = "multi-class"


def find_voc_root(data_root: str, flag: str = "--data_root") -> str:
    """The ``VOC2012`` folder under ``data_root`` (or ``data_root`` itself)."""
    check_root(data_root, flag)
    for candidate in (os.path.join(data_root, "VOCdevkit", "VOC2012"),
                      os.path.join(data_root, "VOC2012"), data_root):
        if all(os.path.isdir(os.path.join(candidate, part)) for part in _PARTS):
            return candidate
    raise DataError(f"{flag} {data_root}: not a Pascal VOC 2012 tree (expected VOCdevkit/VOC2012/"
                    "{JPEGImages,Annotations,ImageSets/Main} under it, or VOC2012/ itself)")


def _read_ids(path: str) -> List[str]:
    try:
        with open(path) as handle:
            ids = [line.split()[0] for line in handle if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot be read ({exc})") from None
    if len(set(ids)) != len(ids):
        raise DataError(f"{path}: an image id is listed twice")
    return sorted(ids)


def list_samples(data_root: str, split: str = "val", limit: Optional[int] = None,
                 flag: str = "--data_root") -> Listing:
    """The single-class images of ``split`` (``train`` or ``val``), sorted by id; with ``limit``
    the first ``limit`` of them. Multi-class images are dropped and counted."""
    root = find_voc_root(data_root, flag)
    split_file = os.path.join(root, "ImageSets", "Main", f"{split}.txt")
    if not os.path.isfile(split_file):
        raise DataError(f"{flag} {data_root}: no split file {split_file} (--split {split})")
    ids = _read_ids(split_file)
    samples, dropped = [], 0
    for image_id in ids:
        xml_path = os.path.join(root, "Annotations", image_id + ".xml")
        if not os.path.isfile(xml_path):
            raise DataError(f"{split_file}: lists {image_id}, which has no annotation {xml_path}")
        width, height, objects = read_voc_xml(xml_path)
        names = {name for name, _ in objects}
        unknown = sorted(names - set(_CLASS_INDEX))
        if unknown:
            raise DataError(f"{xml_path}: class {unknown[0]!r} is not one of the 20 VOC classes")
        if len(names) > 1:
            dropped += 1
            continue
        path = os.path.join(root, "JPEGImages", image_id + ".jpg")
        if not os.path.isfile(path):
            raise DataError(f"{split_file}: lists {image_id}, which has no image {path}")
        name = names.pop()
        samples.append(Sample(name=image_id, path=path, class_name=name,
                              label=_CLASS_INDEX[name], width=width, height=height,
                              boxes=[box for _, box in objects]))
    if limit is not None:
        samples = samples[:max(int(limit), 0)]
    return Listing(dataset="voc", split=split, samples=samples, class_names=VOC_CLASSES,
                   listed=len(ids), dropped={MULTI_CLASS: dropped})


SPEC = DatasetSpec(
    name="voc", prefix="VOC",
    num_classes=len(VOC_CLASSES), splits=("train", "val"), eval_split="val", train_split="train",
    root_help="the folder holding VOCdevkit/ (or VOC2012/ itself)", list_samples=list_samples)
