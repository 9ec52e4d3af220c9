"""CUB-200-2011 (the paper's CUB localization results), as the authors' ``CUBDataset`` reads it.

``--data_root`` is the folder that holds ``CUB_200_2011/`` or that folder itself, with
``images/``, ``images.txt`` (``id path``), ``image_class_labels.txt`` (``id class``),
``train_test_split.txt`` (``id is_training_image``), ``classes.txt`` (``class name``) and
``bounding_boxes.txt`` (``id x y width height``). Splits: ``test`` (``is_training_image == 0``,
5,794 images in the full set) and ``train``. Label: class id - 1. One box per image, floats in
original pixels: ``(x, y, x + width, y + height)``.

Box scaling: the released formula ``int(x / width * W_in)`` (:func:`agcam.datasets.common.gt_boxes`)
takes the float coordinates as they are, so they are truncated once, after scaling; they are not
rounded or truncated to whole pixels first. (Whether the authors' loader truncated first is not
known; it changes a box edge by at most one input pixel.)
"""
from __future__ import annotations

import os
from typing import Dict, List, Optional, Tuple

from agcam.datasets.common import DataError, DatasetSpec, Listing, Sample, check_root

__all__ = ["FILES", "SPEC", "find_cub_root", "list_samples"]

FILES = ("images.txt", "image_class_labels.txt", "train_test_split.txt", "classes.txt",
         "bounding_boxes.txt")
NUM_CLASSES = 200


def find_cub_root(data_root: str, flag: str = "--data_root") -> str:
    """The ``CUB_200_2011`` folder under ``data_root`` (or ``data_root`` itself)."""
    check_root(data_root, flag)
    for candidate in (os.path.join(data_root, "CUB_200_2011"), data_root):
        if os.path.isfile(os.path.join(candidate, "images.txt")):
            return candidate
    raise DataError(f"{flag} {data_root}: not a CUB-200-2011 tree (expected CUB_200_2011/"
                    "images.txt under it, or the CUB_200_2011 folder itself)")


def _read_table(path: str, columns: int) -> Dict[str, List[str]]:
    """``id -> [values]`` of a CUB metadata file (``id v1 v2 ...`` a line)."""
    if not os.path.isfile(path):
        raise DataError(f"{path}: missing (CUB-200-2011 needs {', '.join(FILES)})")
    table: Dict[str, List[str]] = {}
    try:
        with open(path) as handle:
            for line_no, line in enumerate(handle, start=1):
                fields = line.split()
                if not fields:
                    continue
                if len(fields) < columns + 1:
                    raise DataError(f"{path}:{line_no}: expected an id and {columns} value(s)")
                table[fields[0]] = fields[1:columns + 1] if columns > 1 else \
                    [" ".join(fields[1:])]
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot be read ({exc})") from None
    return table


def _box(path: str, image_id: str, values: List[str]) -> Tuple[float, float, float, float]:
    try:
        x, y, width, height = (float(v) for v in values)
    except ValueError:
        raise DataError(f"{path}: the box of image {image_id} is not four numbers") from None
    if not (width > 0 and height > 0):
        raise DataError(f"{path}: the box of image {image_id} has no area")
    return (x, y, x + width, y + height)


def list_samples(data_root: str, split: str = "test", limit: Optional[int] = None,
                 flag: str = "--data_root") -> Listing:
    """The images of ``split`` (``test`` or ``train``), sorted by file name; with ``limit`` the
    first ``limit`` of them."""
    root = find_cub_root(data_root, flag)
    if split not in ("test", "train"):
        raise DataError(f"--split {split}: CUB-200-2011 has the splits test and train")
    paths = {"images": os.path.join(root, "images.txt"),
             "labels": os.path.join(root, "image_class_labels.txt"),
             "split": os.path.join(root, "train_test_split.txt"),
             "classes": os.path.join(root, "classes.txt"),
             "boxes": os.path.join(root, "bounding_boxes.txt")}
    images = _read_table(paths["images"], 1)
    labels = _read_table(paths["labels"], 1)
    is_train = _read_table(paths["split"], 1)
    classes = _read_table(paths["classes"], 1)
    boxes = _read_table(paths["boxes"], 4)
    try:
        class_ids = sorted(int(k) for k in classes)
    except ValueError:
        raise DataError(f"{paths['classes']}: class ids are not numbers") from None
    if class_ids != list(range(1, NUM_CLASSES + 1)):
        raise DataError(f"{paths['classes']}: expected the class ids 1..{NUM_CLASSES}, found "
                        f"{len(class_ids)}")
    class_names = tuple(classes[str(i)][0] for i in class_ids)
    wanted = "1" if split == "train" else "0"
    samples = []
    for image_id, (relative,) in images.items():
        for key in ("split", "labels", "boxes"):
            table = {"split": is_train, "labels": labels, "boxes": boxes}[key]
            if image_id not in table:
                raise DataError(f"{paths[key]}: no entry for image {image_id} ({relative})")
        if is_train[image_id][0] != wanted:
            continue
        label = labels[image_id][0]
        if not label.isdigit() or not 1 <= int(label) <= NUM_CLASSES:
            raise DataError(f"{paths['labels']}: class {label!r} of image {image_id} is not in "
                            f"1..{NUM_CLASSES}")
        path = os.path.join(root, "images", relative)
        if not os.path.isfile(path):
            raise DataError(f"{paths['images']}: lists {relative} (image {image_id}), which is "
                            f"not there ({path})")
        samples.append(Sample(name=os.path.splitext(os.path.basename(relative))[0], path=path,
                              class_name=class_names[int(label) - 1], label=int(label) - 1,
                              boxes=[_box(paths["boxes"], image_id, boxes[image_id])]))
    samples.sort(key=lambda s: s.name)
    for a, b in zip(samples, samples[1:]):
        if a.name == b.name:
            raise DataError(f"{paths['images']}: two images named {a.name} ({a.path}, {b.path})")
    listed = len(samples)
    if limit is not None:
        samples = samples[:max(int(limit), 0)]
    return Listing(dataset="cub", split=split, samples=samples, class_names=class_names,
                   listed=listed)


SPEC = DatasetSpec(
    name="cub", prefix="CUB", num_classes=NUM_CLASSES,
    splits=("test", "train"), eval_split="test", train_split="train",
    root_help="the folder holding CUB_200_2011/ (or that folder itself)",
    list_samples=list_samples)
