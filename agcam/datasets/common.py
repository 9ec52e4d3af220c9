"""What the data sets share: the sample record, the box scaling, the preprocessing and the loader.

Each data set module (:mod:`agcam.datasets.ilsvrc`, :mod:`~agcam.datasets.voc`,
:mod:`~agcam.datasets.cub`) only lists its samples (path, label, boxes in original pixels),
names its classes and checks its layout; everything after that is here and the same for all:

- ground-truth boxes are scaled to the model input as released, ``int(x / width * W_in)`` with
  the image's real size (read when the image is decoded, in the loader worker);
- the preprocessing is the paper's: ``Resize((H, W))`` (squash, bilinear, no crop), ``ToTensor``,
  ``Normalize(mean, std)`` with the model's mean/std (0.5 for the paper's weights).
"""
from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from agcam.distributed import shard_indices
from agcam.errors import UsageError
from models.vit import Geometry, model_geometry

__all__ = ["IMAGE_EXTENSIONS", "DataError", "Sample", "Listing", "DatasetSpec", "gt_boxes",
           "read_voc_xml", "normalize_images", "ValDataset", "collate",
           "make_loader"]

IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png")

#: a box in original pixels: ints (ILSVRC, VOC) or floats (CUB), ``(xmin, ymin, xmax, ymax)``
SourceBox = Tuple[float, float, float, float]


class DataError(UsageError):
    """The data set is missing or malformed (exit code 2, one line naming the file)."""


@dataclass
class Sample:
    """One image and its annotation.

    ``class_name`` is the data set's name of the label (the wnid for ILSVRC). ``width``/``height``
    are the annotation's size where it has one (0 otherwise); the boxes are scaled with the
    image's real size, read when it is decoded (:class:`ValDataset`), as released.
    """

    name: str
    path: str
    class_name: str
    label: int
    width: int = 0
    height: int = 0
    boxes: List[SourceBox] = field(default_factory=list)

    @property
    def wnid(self) -> str:
        """ILSVRC's name for :attr:`class_name`."""
        return self.class_name


@dataclass
class Listing:
    """What a data set module lists for a split: the samples and how many it left out, why."""

    dataset: str
    split: str
    samples: List[Sample]
    class_names: Tuple[str, ...]
    #: images the split lists (before any filter or ``--limit``)
    listed: int
    #: reason -> number of listed images left out for it (e.g. ``{"multi-class": 12}``)
    dropped: Dict[str, int] = field(default_factory=dict)

    def counts(self) -> str:
        parts = [f"{self.listed} listed"]
        parts += [f"{count} dropped as {reason}" for reason, count in self.dropped.items()]
        return ", ".join(parts + [f"{len(self.samples)} used"])

    def describe(self) -> str:
        return f"data set {self.dataset} {self.split}: {self.counts()}"


@dataclass(frozen=True)
class DatasetSpec:
    """One data set behind the common interface (:data:`agcam.datasets.DATASETS`).

    ``list_samples(root, split, limit, flag)`` returns a :class:`Listing`; it raises
    :class:`DataError` naming the flag or file for a missing or malformed layout.
    """

    name: str                   # the --dataset value
    prefix: str                 # in the file names: ILSVRC_<method>.hdf5
    num_classes: int
    splits: Tuple[str, ...]
    eval_split: str             # what localization.py / save_h5.py evaluate by default
    train_split: Optional[str]  # what agcam.train.finetune trains on (None: no fine-tuning)
    root_help: str
    list_samples: Callable[..., Listing]


def is_image_file(filename: str) -> bool:
    return (not filename.startswith(".")
            and os.path.splitext(filename)[1].lower() in IMAGE_EXTENSIONS)


def check_root(data_root: Optional[str], flag: str = "--data_root") -> None:
    if not data_root or not os.path.isdir(data_root):
        raise DataError(f"{flag} {data_root}: no such directory")


def read_voc_xml(path: str) -> Tuple[int, int, List[Tuple[str, Tuple[int, int, int, int]]]]:
    """``(width, height, [(name, box), ...])`` of a Pascal VOC annotation (ILSVRC uses the same
    format); every ``<object>``, difficult ones included, box coordinates as ``int(float(v))``."""
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


def gt_boxes(sample_boxes: Sequence[Sequence[float]], width: int, height: int,
             input_size: Tuple[int, int]) -> List[Tuple[int, int, int, int]]:
    """Boxes in original pixels -> model-input pixels, truncated as released:
    ``int(x / width * W_in)``, ``int(y / height * H_in)`` (``input_size = (H_in, W_in)``).

    Float coordinates (CUB) go into the same formula unchanged: they are truncated once, after
    scaling, never rounded to whole pixels first.
    """
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
