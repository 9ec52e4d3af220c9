"""Reading a store of either layout (:func:`open_store`), detected from the file's content."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Iterator, List, Optional, Sequence, Tuple

import h5py
import numpy as np
import torch

from agcam.datasets.common import normalize_images
from agcam.store.metadata import (
    FORMAT_VERSION,
    PREFIXES,
    StoreError,
    StoreMeta,
    heatmaps_from_maps,
    is_ours,
    is_released,
    open_h5,
)


@dataclass
class StoreBatch:
    """Rows of a store, ready for ABPC: the model input and the heatmap to rank."""

    indices: List[int]
    names: List[str]
    labels: torch.Tensor      # [B] int64
    images: torch.Tensor      # [B, 3, H, W] float32, normalised with the given mean/std
    heatmaps: torch.Tensor    # [B, H, W] float32 in [0, 1]


@dataclass
class StoreReader:
    """A store opened for reading, either layout (:func:`open_store`)."""

    path: str
    layout: str
    names: List[str]
    labels: List[int]
    image_size: Tuple[int, int]
    heatmap_size: Tuple[int, int]
    meta: Optional[StoreMeta] = None
    valid: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    complete: bool = True
    missing: int = 0
    _file: Optional[h5py.File] = None

    @property
    def num_images(self) -> int:
        return len(self.names)

    @property
    def method(self) -> Optional[str]:
        """The method the file records, else the one its released name says, else ``None``."""
        if self.meta is not None and self.meta.method:
            return self.meta.method
        match = re.fullmatch(rf"(?:{'|'.join(PREFIXES)})_(.+)\.hdf5",
                             os.path.basename(self.path))
        return match.group(1) if match else None

    def raw_maps(self, rows: Sequence[int]) -> np.ndarray:
        """The raw ``[n, h, w]`` float32 maps of ``rows`` (compact layout; the released layout
        keeps only the heatmap)."""
        if self.layout != "compact":
            raise StoreError(f"{self.path}: the released layout keeps no raw maps")
        return np.asarray(self._file["maps"][list(rows)], dtype=np.float32)

    def check_complete(self) -> None:
        if not self.complete:
            raise StoreError(f"{self.path} is incomplete ({self.missing} of {self.num_images} "
                             "images not written: save_h5.py was interrupted); run the same "
                             "save_h5.py command again to finish it")

    def batches(self, batch_size: int, mean: Sequence[float], std: Sequence[float],
                indices: Optional[Sequence[int]] = None) -> Iterator[StoreBatch]:
        """The valid rows (all, or ``indices``) in order, ``batch_size`` at a time; images are
        normalised as ``Normalize(mean, std)`` of ``ToTensor``'s output, bit for bit."""
        rows = [i for i in (range(self.num_images) if indices is None else indices)
                if self.valid[i]]
        for start in range(0, len(rows), batch_size):
            part = rows[start:start + batch_size]
            images, heatmaps = self._read(part)
            images = normalize_images(images, mean, std)
            yield StoreBatch(indices=list(part), names=[self.names[i] for i in part],
                             labels=torch.tensor([self.labels[i] for i in part],
                                                 dtype=torch.long),
                             images=images, heatmaps=heatmaps)

    def _read(self, rows: List[int]) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(images, heatmaps)`` of ``rows``: uint8 images (compact layout) or the released float
        ones in [0, 1], both as :func:`agcam.datasets.common.normalize_images` takes them."""
        f = self._file
        if self.layout == "compact":
            lo, hi = rows[0], rows[-1] + 1
            if hi - lo == len(rows):
                u8, maps = f["images"][lo:hi], f["maps"][lo:hi]
            else:
                u8, maps = f["images"][rows], f["maps"][rows]
            images = torch.from_numpy(u8)                           # uint8
            heatmaps = heatmaps_from_maps(torch.from_numpy(maps), self.image_size)
            return images, heatmaps
        images = np.stack([np.asarray(f["image"][self.names[i]][()], dtype=np.float32)
                           .reshape(3, *self.image_size) for i in rows])
        heatmaps = np.stack([np.asarray(f["cam"][self.names[i]][()], dtype=np.float32)
                             .reshape(self.image_size) for i in rows])
        return torch.from_numpy(images), torch.from_numpy(heatmaps)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def open_store(path: str, flag: str = "--h5_file") -> StoreReader:
    """Open a store of either layout; :class:`StoreError` for anything that is not one.

    Completeness is recorded, not enforced: call :meth:`StoreReader.check_complete`.
    """
    if os.path.isdir(path):
        raise StoreError(f"{flag} {path}: is a directory, not an HDF5 file")
    f = open_h5(path, "r", flag)
    try:
        if is_ours(f) and "images" in f:
            reader = _open_compact(path, f)
        elif is_released(f):
            reader = _open_released(path, f)
        else:
            raise StoreError(f"{flag} {path}: neither our layout (names, labels, images, maps) "
                             "nor the released one (groups image, cam, label)")
    except StoreError:
        f.close()
        raise
    except (KeyError, ValueError, OSError, TypeError) as exc:
        f.close()
        raise StoreError(f"{flag} {path}: malformed store ({type(exc).__name__}: {exc})") \
            from None
    reader._file = f
    return reader


def _open_compact(path: str, f: h5py.File) -> StoreReader:
    version = int(f.attrs.get("format_version", -1))
    if version != FORMAT_VERSION:
        raise StoreError(f"{path}: store format version {version}; this code reads "
                         f"{FORMAT_VERSION}")
    meta = StoreMeta.from_attrs(f.attrs)
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in f["names"][()]]
    labels = [int(v) for v in f["labels"][()]]
    images, maps = f["images"], f["maps"]
    n = len(names)
    if len(labels) != n or images.shape[0] != n or maps.shape[0] != n:
        raise StoreError(f"{path}: names, labels, images and maps differ in length")
    if images.ndim != 4 or images.shape[1] != 3 or maps.ndim != 3:
        raise StoreError(f"{path}: images {images.shape} / maps {maps.shape} are not "
                         "[N, 3, H, W] / [N, h, w]")
    done = f["done"][()].astype(bool)
    complete = bool(done.all()) and int(f.attrs.get("complete", 0)) == 1
    return StoreReader(path=path, layout="compact", names=names, labels=labels,
                       image_size=tuple(images.shape[2:]), heatmap_size=tuple(images.shape[2:]),
                       meta=meta, valid=f["valid"][()].astype(bool) & done, complete=complete,
                       missing=int((~done).sum()))


def _open_released(path: str, f: h5py.File) -> StoreReader:
    names = sorted(f["image"].keys())
    for group in ("cam", "label"):
        others = set(f[group].keys())
        if others != set(names):
            odd = sorted(others.symmetric_difference(names))[:3]
            raise StoreError(f"{path}: groups image and {group} list different images "
                             f"(e.g. {', '.join(odd)})")
    if not names:
        raise StoreError(f"{path}: the released layout holds no images")
    image_shapes = {tuple(s for s in f["image"][n].shape if s != 1) for n in names}
    cam_shapes = {tuple(s for s in f["cam"][n].shape if s != 1) for n in names}
    if len(image_shapes) != 1 or len(cam_shapes) != 1:
        raise StoreError(f"{path}: images or heatmaps of different shapes")
    image_shape, cam_shape = image_shapes.pop(), cam_shapes.pop()
    if len(image_shape) != 3 or image_shape[0] != 3 or len(cam_shape) != 2:
        raise StoreError(f"{path}: image datasets {image_shape} / cam datasets {cam_shape} are "
                         "not [1, 3, H, W] / [1, H, W]")
    labels = [int(np.asarray(f["label"][n][()]).reshape(-1)[0]) for n in names]
    meta = StoreMeta.from_attrs(f.attrs) if is_ours(f) else None
    complete = True
    if meta is not None:
        complete = int(f.attrs.get("complete", 0)) == 1
    missing = 0 if complete else int(f.attrs.get("num_images", len(names))) - len(names)
    return StoreReader(path=path, layout="released", names=names, labels=labels,
                       image_size=tuple(image_shape[1:]), heatmap_size=tuple(cam_shape),
                       meta=meta, valid=np.ones(len(names), dtype=bool), complete=complete,
                       missing=max(missing, 0) if not complete else 0)

