"""The ILSVRC 2012 validation set: samples, labels, boxes, and the loader that decodes them.

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

Ground-truth boxes are scaled to the model input as released, ``int(x / width * W_in)`` with the
image's real size (read when the image is decoded, in the loader worker).
"""
from __future__ import annotations

import csv
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image
from timm.data import ImageNetInfo
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from agcam.boxes import Box, boxes_to_mask
from agcam.errors import UsageError
from agcam.distributed import shard_indices
from models.vit import Geometry, model_geometry

__all__ = ["IMAGENET_WNIDS", "IMAGE_EXTENSIONS", "DataError", "Sample", "find_samples",
           "wnid_to_index", "gt_boxes", "boxes_to_mask", "ValDataset", "collate", "make_loader",
           "IMAGE_DIR", "ANNOTATION_DIR", "SOLUTION_CSV"]

#: The 1000 ImageNet-1k wnids, sorted: a wnid's position is its class index.
IMAGENET_WNIDS: Tuple[str, ...] = tuple(sorted(ImageNetInfo().label_names()))
_WNID_INDEX: Dict[str, int] = {wnid: i for i, wnid in enumerate(IMAGENET_WNIDS)}

IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png")
IMAGE_DIR = os.path.join("Data", "CLS-LOC", "val")
ANNOTATION_DIR = os.path.join("Annotations", "CLS-LOC", "val")
SOLUTION_CSV = "LOC_val_solution.csv"


class DataError(UsageError):
    """The validation set is missing or malformed (exit code 2, one line naming the file)."""


def wnid_to_index(wnid: str) -> int:
    """Class index of an ImageNet wnid (``n01440764`` -> 0); ``KeyError`` for an unknown one."""
    return _WNID_INDEX[wnid]


@dataclass
class Sample:
    """One validation image and its annotation.

    ``width``/``height`` are the annotation's ``<size>``; the boxes are scaled with the image's
    real size, read when it is decoded (:class:`ValDataset`), as released.
    """

    name: str
    path: str
    wnid: str
    label: int
    width: int
    height: int
    boxes: List[Box] = field(default_factory=list)


def _is_image(filename: str) -> bool:
    return (not filename.startswith(".")
            and os.path.splitext(filename)[1].lower() in IMAGE_EXTENSIONS)


def _list_images(image_dir: str) -> List[Tuple[str, str, Optional[str]]]:
    """``(name, path, folder wnid or None)`` of every image in layout (a) or (b), both allowed."""
    found = []
    with os.scandir(image_dir) as entries:
        for entry in entries:
            if entry.is_dir():
                if entry.name.startswith("."):
                    continue
                with os.scandir(entry.path) as inner:
                    images = [e for e in inner if e.is_file() and _is_image(e.name)]
                if images and entry.name not in _WNID_INDEX:
                    raise DataError(f"{entry.path}: folder name is not an ImageNet wnid "
                                    "(layout Data/CLS-LOC/val/<wnid>/<image>)")
                found.extend((os.path.splitext(e.name)[0], e.path, entry.name) for e in images)
            elif entry.is_file() and _is_image(entry.name):
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


def _read_annotation(path: str) -> Tuple[int, int, List[Tuple[str, Box]]]:
    """``(width, height, [(wnid, box), ...])`` of a Pascal VOC annotation."""
    try:
        root = ET.parse(path).getroot()
        size = root.find("size")
        width = int(float(size.findtext("width")))
        height = int(float(size.findtext("height")))
        objects = []
        for obj in root.iter("object"):
            box = obj.find("bndbox")
            objects.append((obj.findtext("name", "").strip(),
                            tuple(int(float(box.findtext(k)))
                                  for k in ("xmin", "ymin", "xmax", "ymax"))))
    except ET.ParseError as exc:
        raise DataError(f"{path}: not a valid annotation XML ({exc})") from None
    except (AttributeError, TypeError, ValueError):
        raise DataError(f"{path}: annotation lacks <size> or an object's <name>/<bndbox> "
                        "(xmin, ymin, xmax, ymax)") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc})") from None
    if not objects:
        raise DataError(f"{path}: annotation has no <object>")
    if width <= 0 or height <= 0:
        raise DataError(f"{path}: <size> {width}x{height} is not an image size")
    return width, height, objects


def find_samples(data_root: str, limit: Optional[int] = None, flag: str = "--data_root"
                 ) -> List[Sample]:
    """Every validation image under ``data_root`` with its label and boxes, sorted by name.

    With ``limit``, only the first ``limit`` images (by name) are annotated and returned.
    Raises :class:`DataError` naming the flag or file for a missing or empty ``data_root``, an
    image without annotation, an unknown wnid, a malformed annotation or a duplicate name.
    """
    if not data_root or not os.path.isdir(data_root):
        raise DataError(f"{flag} {data_root}: no such directory")
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
        width, height, objects = _read_annotation(xml_path)
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
        samples.append(Sample(name=name, path=path, wnid=wnid, label=_WNID_INDEX[wnid],
                              width=width, height=height, boxes=[box for _, box in objects]))
    return samples


def gt_boxes(sample_boxes: Sequence[Sequence[int]], width: int, height: int,
             input_size: Tuple[int, int]) -> List[Box]:
    """Boxes in original pixels -> model-input pixels, truncated as released:
    ``int(x / width * W_in)``, ``int(y / height * H_in)`` (``input_size = (H_in, W_in)``)."""
    in_h, in_w = int(input_size[0]), int(input_size[1])
    return [(int(xmin / width * in_w), int(ymin / height * in_h),
             int(xmax / width * in_w), int(ymax / height * in_h))
            for xmin, ymin, xmax, ymax in sample_boxes]


def _as_geometry(model_or_geometry: Union[nn.Module, Geometry]) -> Geometry:
    return model_or_geometry if isinstance(model_or_geometry, Geometry) else \
        model_geometry(model_or_geometry)


def normalize_images(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]
                     ) -> torch.Tensor:
    """``[B, 3, H, W]`` -> the model input: for uint8 images ``ToTensor`` (``/ 255``), then
    ``Normalize(mean, std)``; the same float operations as the torchvision pipeline, so the result
    equals it bit for bit. Float images are taken as ``ToTensor`` output already."""
    if images.dtype == torch.uint8:
        images = images.float().div(255)
    return TF.normalize(images, list(mean), list(std))


class ValDataset(Dataset):
    """Decodes, resizes and normalises the validation images (in the loader workers).

    An item is a dict: ``index`` (position in ``samples``), ``input`` (``[3, H, W]`` float, the
    normalised model input), ``image`` (``[3, H, W]`` uint8, the resized image before
    normalisation: ``image / 255`` is exactly ``ToTensor``'s output; only with ``keep_image``),
    ``label``, ``size`` (the real ``(width, height)``), ``boxes`` (ground truth scaled to the
    input), ``valid`` and ``error``. An image that cannot be decoded gives ``valid=False`` and
    the reason in ``error`` instead of raising, so one corrupt file does not end a 50,000-image
    run.
    """

    def __init__(self, samples: Sequence[Sample], model_or_geometry: Union[nn.Module, Geometry],
                 keep_image: bool = True):
        self.samples = list(samples)
        self.geometry = _as_geometry(model_or_geometry)
        self.keep_image = keep_image

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Dict[str, Any]:
        sample = self.samples[index]
        height, width = self.geometry.input_size
        item: Dict[str, Any] = {"index": index, "label": sample.label, "valid": True,
                                "error": ""}
        try:
            with Image.open(sample.path) as image:
                real_size = image.size
                image = image.convert("RGB")
            # The released preprocessing: Resize((H, W)), bilinear, on the PIL image.
            image = TF.resize(image, [height, width], interpolation=InterpolationMode.BILINEAR)
            pixels = torch.from_numpy(np.array(image, dtype=np.uint8, copy=True))
        except Exception as exc:  # truncated, corrupt or unreadable files: PIL raises many types
            item.update(valid=False, error=f"{type(exc).__name__}: {exc}", size=(0, 0),
                        boxes=[], input=torch.zeros(3, height, width))
            if self.keep_image:
                item["image"] = torch.zeros(3, height, width, dtype=torch.uint8)
            return item
        pixels = pixels.permute(2, 0, 1).contiguous()
        item["input"] = normalize_images(pixels[None], self.geometry.mean, self.geometry.std)[0]
        if self.keep_image:
            item["image"] = pixels
        item["size"] = tuple(real_size)
        item["boxes"] = gt_boxes(sample.boxes, real_size[0], real_size[1], (height, width))
        return item


def collate(items: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Stack a list of :class:`ValDataset` items; invalid ones stay in, marked by ``valid``."""
    batch: Dict[str, Any] = {
        "index": torch.tensor([it["index"] for it in items], dtype=torch.long),
        "label": torch.tensor([it["label"] for it in items], dtype=torch.long),
        "valid": torch.tensor([it["valid"] for it in items], dtype=torch.bool),
        "size": torch.tensor([it["size"] for it in items], dtype=torch.long).reshape(-1, 2),
        "input": torch.stack([it["input"] for it in items]),
        "boxes": [it["boxes"] for it in items],
        "error": [it["error"] for it in items],
    }
    if items and "image" in items[0]:
        batch["image"] = torch.stack([it["image"] for it in items])
    return batch


#: batches each loader worker decodes ahead (torch's default is 2)
PREFETCH_FACTOR = 4


def loader_options(num_workers: int, pin_memory: bool) -> Dict[str, Any]:
    """The ``DataLoader`` settings that keep a device fed: pinned memory (so that the
    ``non_blocking`` copies overlap) and :data:`PREFETCH_FACTOR` batches in flight per worker."""
    options: Dict[str, Any] = {"num_workers": num_workers, "pin_memory": pin_memory}
    if num_workers > 0:
        options["prefetch_factor"] = PREFETCH_FACTOR
    return options


def make_loader(dataset: Dataset, batch_size: int = 16, num_workers: int = 2, rank: int = 0,
                world_size: int = 1, pin_memory: bool = False, collate_fn=collate) -> DataLoader:
    """A loader over this process's shard of ``dataset`` (every ``world_size``-th item from
    ``rank``, see :func:`agcam.distributed.shard_indices`), in order, decoded in ``num_workers``
    worker processes (0: in this process)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if num_workers < 0:
        raise ValueError(f"num_workers must be at least 0, got {num_workers}")
    if world_size > 1:
        dataset = Subset(dataset, shard_indices(len(dataset), rank, world_size))
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_fn,
                      drop_last=False, persistent_workers=False,
                      **loader_options(num_workers, pin_memory))
