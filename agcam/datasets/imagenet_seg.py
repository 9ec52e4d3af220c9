"""ImageNet-Segmentation (Guillaumin, Kuettel and Ferrari, IJCV 2014; 4,276 images of ImageNet
with a foreground mask), the set of Chefer et al.'s segmentation test, read as
hila-chefer/Transformer-Explainability's ``data/Imagenet.py`` (``Imagenet_Segmentation``) reads it.

The file is ``gtsegs_ijcv.mat``, MATLAB v7.3, which is HDF5: h5py reads it through object
references.

- ``/value/img`` is an ``[N, 1]`` array of references; ``/value/img[i, 0]`` points at a
  ``[3, W, H]`` uint8 array (MATLAB stores column-major), the image once transposed to
  ``[H, W, 3]``;
- ``/value/gt[i, 0]`` points at a cell, a ``[1, 1]`` array of references, whose ``[0, 0]`` points
  at the ``[W, H]`` mask, ``[H, W]`` once transposed, values 0 (background) and 1 (foreground).

Preprocessing, as there: the image resized to the model input with ``Resize((H, W))``
(bilinear, no crop), ``ToTensor``, ``Normalize`` (the model's mean and std); the mask resized with
``NEAREST``. The set has no class labels; the test explains the predicted class.

``--data_root`` is the folder holding ``gtsegs_ijcv.mat`` or the file itself.
"""
from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import Dataset
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from agcam.datasets.common import DataError, _as_geometry, normalize_images
from models.vit import Geometry

__all__ = ["MAT_FILE", "find_mat_file", "count_images", "read_pair", "SegmentationDataset",
           "collate_segmentation"]

MAT_FILE = "gtsegs_ijcv.mat"


def find_mat_file(data_root: Optional[str], flag: str = "--data_root") -> str:
    """The ``.mat`` file ``data_root`` names: the file itself or ``<folder>/gtsegs_ijcv.mat``;
    :class:`DataError` (exit code 2, one line) when it is not there."""
    if not data_root:
        raise DataError(f"{flag} not given: pass the folder holding {MAT_FILE} (ImageNet-"
                        "Segmentation) or the file itself")
    path = os.path.join(data_root, MAT_FILE) if os.path.isdir(data_root) else data_root
    if not os.path.isfile(path):
        raise DataError(f"{flag} {data_root}: no {MAT_FILE} (ImageNet-Segmentation, MATLAB v7.3)"
                        " there")
    return path


def _open(path: str):
    import h5py
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise DataError(f"{path}: not a MATLAB v7.3 (HDF5) file ({exc})") from None


def count_images(path: str) -> int:
    """The number of images in the file (the length of ``/value/img``), checking that
    ``/value/img`` and ``/value/gt`` are there and agree."""
    with _open(path) as handle:
        try:
            images, masks = handle["/value/img"], handle["/value/gt"]
        except KeyError:
            raise DataError(f"{path}: no /value/img and /value/gt (not ImageNet-Segmentation's "
                            f"{MAT_FILE})") from None
        if images.shape != masks.shape or len(images.shape) != 2:
            raise DataError(f"{path}: /value/img {images.shape} and /value/gt {masks.shape} "
                            "are not two [N, 1] arrays of references")
        return int(images.shape[0])


def read_pair(handle, index: int, path: str = MAT_FILE) -> Tuple[np.ndarray, np.ndarray]:
    """Image ``[H, W, 3]`` uint8 and mask ``[H, W]`` uint8 in {0, 1} of image ``index`` of an open
    file. A grayscale image (``[W, H]``) is read as ``[H, W]`` and made RGB by the caller."""
    image = np.asarray(handle[handle["/value/img"][index, 0]])
    image = image.transpose((2, 1, 0)) if image.ndim == 3 else image.transpose((1, 0))
    cell = handle[handle["/value/gt"][index, 0]]
    mask = np.asarray(handle[cell[0, 0]]).transpose((1, 0))
    if image.shape[:2] != mask.shape:
        raise DataError(f"{path}: image {index} is {image.shape[:2]} but its mask {mask.shape}")
    if not np.isin(mask, (0, 1)).all():
        raise DataError(f"{path}: mask {index} has values other than 0 and 1")
    return np.ascontiguousarray(image, dtype=np.uint8), mask.astype(np.uint8)


class SegmentationDataset(Dataset):
    """The images and masks of ``gtsegs_ijcv.mat`` at the model input size.

    An item: ``index``, ``input`` (``[3, H, W]``, the normalised model input), ``mask`` (``[H, W]``
    uint8 in {0, 1}, NEAREST-resized), ``size`` (the original ``(width, height)``), ``valid`` and
    ``error`` (an image that cannot be read is marked, not raised, as in
    :class:`agcam.datasets.common.ValDataset`). The file is opened once per loader worker.
    """

    def __init__(self, path: str, model_or_geometry: Union[nn.Module, Geometry],
                 limit: Optional[int] = None):
        self.path = path
        self.geometry = _as_geometry(model_or_geometry)
        self.listed = count_images(path)
        self.length = self.listed if limit is None else min(self.listed, max(int(limit), 0))
        self._handle = None

    def __len__(self) -> int:
        return self.length

    def __getstate__(self) -> Dict[str, Any]:   # an open h5py file does not pickle
        state = dict(self.__dict__)
        state["_handle"] = None
        return state

    def __getitem__(self, index: int) -> Dict[str, Any]:
        if self._handle is None:
            self._handle = _open(self.path)
        height, width = self.geometry.input_size
        item: Dict[str, Any] = {"index": index, "valid": True, "error": ""}
        try:
            pixels, mask = read_pair(self._handle, index, self.path)
            image = Image.fromarray(pixels).convert("RGB")
            size = image.size
            image = TF.resize(image, [height, width], interpolation=InterpolationMode.BILINEAR)
            mask = TF.resize(Image.fromarray(mask), [height, width],
                             interpolation=InterpolationMode.NEAREST)
        except Exception as exc:   # h5py, PIL and our own checks raise many types
            item.update(valid=False, error=f"{type(exc).__name__}: {exc}", size=(0, 0),
                        input=torch.zeros(3, height, width),
                        mask=torch.zeros(height, width, dtype=torch.uint8))
            return item
        pixels = torch.from_numpy(np.array(image, dtype=np.uint8, copy=True)).permute(2, 0, 1)
        item["input"] = normalize_images(pixels[None], self.geometry.mean, self.geometry.std)[0]
        item["mask"] = torch.from_numpy(np.array(mask, dtype=np.uint8, copy=True))
        item["size"] = tuple(size)
        return item


def collate_segmentation(items: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Stack :class:`SegmentationDataset` items; invalid ones stay in, marked by ``valid``."""
    return {
        "index": torch.tensor([it["index"] for it in items], dtype=torch.long),
        "valid": torch.tensor([it["valid"] for it in items], dtype=torch.bool),
        "size": torch.tensor([it["size"] for it in items], dtype=torch.long).reshape(-1, 2),
        "input": torch.stack([it["input"] for it in items]),
        "mask": torch.stack([it["mask"] for it in items]),
        "error": [it["error"] for it in items],
    }
