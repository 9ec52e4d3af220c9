"""The HDF5 store that ``save_h5.py`` writes and ``ABPC.py`` reads, in two layouts.

**Compact** (ours, the default): fixed-shape chunked datasets at the root, all allocated when
the file is created, so that writing a batch only fills allocated space and never changes the
file's structure (a ``kill -9`` cannot leave it unreadable):

=========== ======================== ======================================================
``names``    ``[N]`` UTF-8 strings    image names, sorted (written at creation)
``labels``   ``[N]`` int64            class indices (written at creation)
``images``   ``[N, 3, H, W]`` uint8   the resized image before normalisation (lossless: it
                                      gives the released model input bit for bit)
``maps``     ``[N, h, w]`` float32    the raw explanation map of the label class on the patch
                                      grid; the heatmap is :func:`heatmaps_from_maps` of it
``valid``    ``[N]`` uint8            0 for an image that could not be decoded
``done``     ``[N]`` uint8            1 once the row is written; set only after the row's data
                                      is flushed
=========== ======================== ======================================================

Root attributes describe the file (:class:`StoreMeta`): format and version, method, model,
checkpoint and its SHA-256, timm and torch versions, input size, patch grid (the heatmap
resolution), mean, std, the batch size the rows were computed with, the ``precision`` of the maps
(``fp32``, ``tf32``, ``bf16``; a file without it was written at ``fp32``) and ``complete`` (0
until every row is done). About 151 KB an image against the released 804 KB (18.8%).

Why raw maps and not the 224x224 heatmap: ABPC ranks the heatmap's pixels, so it needs the
heatmap to the last bit; the released heatmap is ``torchvision.transforms.Resize`` of the map
(bilinear with ``antialias=True``) then min-max normalised, and :func:`heatmaps_from_maps` repeats
those float operations, equal to the released ``cam`` datasets bit for bit given the same map.
A float32 heatmap would cost 200 KB an image (gzip saves little on it); float16 would merge
neighbouring values and change the ranking.

**Released** (``--layout released``): groups ``image`` (``[1, 3, H, W]`` float32, the model input
un-normalised, :func:`unnormalized_images`),
``cam`` (``[1, H, W]`` float32 heatmap) and ``label`` (int64 ``[1]``), one dataset per image name,
as the authors' ``save_h5.py`` writes them; the root gets our attributes too, which old readers
ignore. Creating datasets changes the file's structure, so this layout is written to
``<file>.partial`` (with ``<file>.partial.json``, the run's names and labels) and renamed when
complete; a ``.partial`` damaged by a kill is started over.

:func:`open_store` reads both layouts, detected from the file's content.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import h5py
import numpy as np
import torch

from agcam.errors import UsageError
from agcam.datasets.common import normalize_images
from agcam.maps import to_heatmap

FORMAT = "agcam-abpc-store"
FORMAT_VERSION = 1
LAYOUTS = ("compact", "released")
RELEASED_GROUPS = ("image", "cam", "label")
PARTIAL_SUFFIX = ".partial"

#: how the heatmap is made from the stored map (recorded in every file we write)
HEATMAP_RECIPE = ("torch.nn.functional.interpolate(map, input_size, mode='bilinear', "
                  "align_corners=False, antialias=True) then (m - min) / (max - min) per map "
                  "(= the released torchvision.transforms.Resize + min-max, bit for bit)")


class StoreError(UsageError):
    """The HDF5 store is missing, unreadable, of another run or incomplete (exit code 2)."""


#: the data sets' file-name prefixes (``agcam.datasets.DatasetSpec.prefix``)
PREFIXES = ("ILSVRC", "VOC", "CUB")


def store_path(save_root: str, method: str, prefix: str = "ILSVRC") -> str:
    """``<save_root>/<prefix>_<method>.hdf5``: ``ILSVRC_<method>.hdf5`` is the released file name,
    ``VOC_<method>.hdf5`` and ``CUB_<method>.hdf5`` name the other two data sets."""
    return os.path.join(save_root, f"{prefix}_{method}.hdf5")


def heatmaps_from_maps(maps: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Raw ``[B, h, w]`` maps to the released ``[B, H, W]`` heatmaps in [0, 1], on the CPU.

    The released ``save_h5.py`` resizes with ``torchvision.transforms.Resize`` on a tensor, which
    is bilinear interpolation with ``antialias=True``: for upsampling the weights are the same as
    plain bilinear, but the kernel rounds differently, and the ranking ABPC makes sees the
    difference. A constant map becomes all zeros (the released code divides 0 by 0).
    """
    return to_heatmap(maps.detach().to("cpu", torch.float32), size, antialias=True)


def unnormalized_images(images_u8: torch.Tensor, mean: Sequence[float], std: Sequence[float]
                        ) -> torch.Tensor:
    """The float32 ``image`` datasets of the released layout from uint8 ``[B, 3, H, W]``.

    The released ``save_h5.py`` stores the model input un-normalised, ``x * std + mean`` with
    ``x = Normalize(mean, std)(ToTensor(image))``: within one float32 ulp of ``image / 255`` and,
    unlike it, equal to the released datasets bit for bit.
    """
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return normalize_images(images_u8, mean, std).mul(std_t).add(mean_t)


# --------------------------------------------------------------------------------------------
# metadata

@dataclass
class StoreMeta:
    """What a store records about how it was made (root attributes of the file)."""

    method: str
    model: str
    input_size: Tuple[int, int]
    grid: Tuple[int, int]
    mean: Tuple[float, float, float]
    std: Tuple[float, float, float]
    batch_size: int
    checkpoint: str = ""
    checkpoint_sha256: str = ""
    timm_version: str = ""
    torch_version: str = ""
    layout: str = "compact"
    #: the data set (``--dataset``); empty in files written before it was recorded
    dataset: str = ""
    #: the precision the maps were computed at (agcam.precision; files without it: fp32)
    precision: str = "fp32"

    def attrs(self) -> Dict[str, object]:
        out = {"format": FORMAT, "format_version": FORMAT_VERSION, "heatmap": HEATMAP_RECIPE}
        for key, value in asdict(self).items():
            out[key] = np.asarray(value) if isinstance(value, (tuple, list)) else value
        out["heatmap_resolution"] = np.asarray(self.grid)
        return out

    @classmethod
    def from_attrs(cls, attrs) -> "StoreMeta":
        def text(key, default=""):
            value = attrs.get(key, default)
            return value.decode() if isinstance(value, bytes) else str(value)

        def ints(key):
            return tuple(int(v) for v in np.asarray(attrs[key]).reshape(-1))

        def floats(key):
            return tuple(float(v) for v in np.asarray(attrs[key]).reshape(-1))

        return cls(method=text("method"), model=text("model"), input_size=ints("input_size"),
                   grid=ints("grid"), mean=floats("mean"), std=floats("std"),
                   batch_size=int(attrs["batch_size"]), checkpoint=text("checkpoint"),
                   checkpoint_sha256=text("checkpoint_sha256"),
                   timm_version=text("timm_version"), torch_version=text("torch_version"),
                   layout=text("layout", "compact"), dataset=text("dataset", ""),
                   precision=text("precision", "fp32"))

    def differences(self, other: "StoreMeta") -> List[str]:
        """The settings in which ``other`` differs (those that change the stored values)."""
        keys = ("method", "model", "checkpoint_sha256", "input_size", "grid", "mean", "std",
                "layout", "precision")
        mine, theirs = asdict(self), asdict(other)
        out = []
        for key in keys:
            a, b = mine[key], theirs[key]
            if isinstance(a, (tuple, list)):
                same = len(a) == len(b) and np.allclose(a, b, rtol=0, atol=1e-9)
            else:
                same = a == b
            if not same:
                out.append(f"{key} {b!r} (this run: {a!r})")
        return out


def _is_ours(handle: h5py.File) -> bool:
    value = handle.attrs.get("format", "")
    return (value.decode() if isinstance(value, bytes) else str(value)) == FORMAT


def _open_h5(path: str, mode: str = "r", flag: str = "--h5_file") -> h5py.File:
    try:
        return h5py.File(path, mode)
    except FileNotFoundError:
        raise StoreError(f"{flag} {path}: no such file") from None
    except (OSError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise StoreError(f"{flag} {path}: not a readable HDF5 file ({reason})") from None


# --------------------------------------------------------------------------------------------
# writers

def work_units(num_images: int, batch_size: int) -> List[List[int]]:
    """The fixed batches rows are computed in: ``[0, b), [b, 2b), ...``.

    Each row is always explained in the same batch, whatever the number of processes or where an
    interrupted run stopped, so its float bits do not depend on either.
    """
    return [list(range(start, min(start + batch_size, num_images)))
            for start in range(0, num_images, batch_size)]


class StoreWriter:
    """Common interface of the two layouts' writers (create or resume a file)."""

    path: str
    meta: StoreMeta
    names: List[str]

    def pending(self) -> List[List[int]]:
        """The work units still to do (see :func:`work_units`)."""
        raise NotImplementedError

    def write(self, indices: Sequence[int], images: np.ndarray, maps: np.ndarray,
              valid: np.ndarray) -> None:
        """Commit the rows ``indices``: ``images`` uint8 ``[B, 3, H, W]``, raw ``maps``
        ``[B, h, w]``, ``valid`` bool ``[B]``; durable once this returns."""
        raise NotImplementedError

    def finish(self) -> None:
        """Mark the file complete (every row must be done)."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    @property
    def complete(self) -> bool:
        return not self.pending()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _check_same_run(path: str, meta: StoreMeta, names: Sequence[str], labels: Sequence[int],
                    stored: StoreMeta, stored_names: Sequence[str],
                    stored_labels: Sequence[int]) -> None:
    problems = meta.differences(stored)
    if list(stored_names) != list(names):
        problems.append(f"{len(stored_names)} images (this run: {len(names)}, or other names)")
    elif list(map(int, stored_labels)) != list(map(int, labels)):
        problems.append("the labels")
    if problems:
        raise StoreError(f"{path} exists and was written by another run (" + "; ".join(problems)
                         + "); delete it or choose another --save_root")


def _dcpl_early(chunks: Tuple[int, ...]) -> h5py.h5p.PropDCID:
    """Chunked, every chunk allocated at creation, no fill writes: later writes only fill
    allocated space, never the chunk index."""
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_chunk(chunks)
    dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
    dcpl.set_fill_time(h5py.h5d.FILL_TIME_NEVER)
    return dcpl


class CompactWriter(StoreWriter):
    """Our layout (module docstring). Creates ``path`` or resumes it."""

    def __init__(self, path: str, names: Sequence[str], labels: Sequence[int],
                 meta: StoreMeta):
        self.path = path
        self.names = list(names)
        meta.layout = "compact"
        if os.path.exists(path):
            self.file = _open_h5(path, "r+", flag="existing file")
            try:
                if not (_is_ours(self.file) and "images" in self.file):
                    kind = "the released layout" if _is_released(self.file) else "another format"
                    raise StoreError(f"{path} exists in {kind}; delete it, choose another "
                                     "--save_root, or pass --layout released")
                stored = StoreMeta.from_attrs(self.file.attrs)
                stored_names = [n.decode() if isinstance(n, bytes) else str(n)
                                for n in self.file["names"][()]]
                _check_same_run(path, meta, names, labels, stored, stored_names,
                                self.file["labels"][()])
            except BaseException:
                self.file.close()
                raise
            self.meta = stored       # resume with the file's batch size
        else:
            self.meta = meta
            self._create(path, labels)
        self.done = self.file["done"][()].astype(bool)

    def _create(self, path: str, labels: Sequence[int]) -> None:
        n = len(self.names)
        if n == 0:
            raise StoreError("no images to write")
        height, width = self.meta.input_size
        grid_h, grid_w = self.meta.grid
        tmp = path + ".creating"
        with h5py.File(tmp, "w") as f:
            for key, value in self.meta.attrs().items():
                f.attrs[key] = value
            f.attrs["num_images"] = n
            f.attrs["complete"] = 0
            rows = min(n, 4096)
            f.create_dataset("names", data=np.array(self.names, dtype=object),
                             dtype=h5py.string_dtype(), chunks=(rows,))
            f.create_dataset("labels", data=np.asarray(labels, dtype=np.int64), chunks=(rows,))
            for name, shape, dtype, chunks in (
                    ("images", (n, 3, height, width), np.uint8, (1, 3, height, width)),
                    ("maps", (n, grid_h, grid_w), np.float32, (min(n, 256), grid_h, grid_w)),
                    ("valid", (n,), np.uint8, (rows,)),
                    ("done", (n,), np.uint8, (rows,))):
                f.create_dataset(name, shape=shape, dtype=dtype, dcpl=_dcpl_early(chunks))
            f["done"][...] = 0
            f["valid"][...] = 0
        # The file appears under its name only once its structure is complete.
        os.replace(tmp, path)
        self.file = _open_h5(path, "r+", flag="new file")

    def pending(self) -> List[List[int]]:
        return [unit for unit in work_units(len(self.names), self.meta.batch_size)
                if not self.done[unit].all()]

    def write(self, indices, images, maps, valid) -> None:
        rows = np.asarray(indices, dtype=np.int64)
        if rows.size == 0:
            return
        order = np.argsort(rows)
        rows = rows[order]
        images = np.asarray(images, dtype=np.uint8)[order]
        maps = np.asarray(maps, dtype=np.float32)[order]
        valid = np.asarray(valid, dtype=np.uint8)[order]
        contiguous = bool(np.all(np.diff(rows) == 1))
        sel = slice(int(rows[0]), int(rows[-1]) + 1) if contiguous else rows
        f = self.file
        if images.shape[1:] != f["images"].shape[1:] or maps.shape[1:] != f["maps"].shape[1:]:
            raise ValueError(f"rows of shape {images.shape[1:]} / {maps.shape[1:]} do not fit "
                             f"{f['images'].shape[1:]} / {f['maps'].shape[1:]}")
        f["images"][sel] = images
        f["maps"][sel] = maps
        f["valid"][sel] = valid
        f.flush()                      # the data is on disk before it is marked done
        f["done"][sel] = 1
        f.flush()
        self.done[rows] = True

    def finish(self) -> None:
        if not self.done.all():
            raise RuntimeError(f"{self.path}: {int((~self.done).sum())} rows are not written")
        if int(self.file.attrs.get("complete", 0)) == 1:
            return
        self.file.attrs["complete"] = 1
        self.file.flush()

    def close(self) -> None:
        if getattr(self, "file", None) is not None:
            self.file.close()
            self.file = None


class ReleasedWriter(StoreWriter):
    """The released layout, written to ``<path>.partial`` and renamed when complete.

    The run's names and labels are kept beside it in ``<path>.partial.json`` (a 50,000-name list
    is too large for an HDF5 attribute); progress is the root attribute ``done_units`` (work
    units committed, in order), updated after each unit's datasets are flushed. Datasets of a
    unit past ``done_units`` (written just before a kill) are overwritten on resume. A partial
    file that cannot be read back is started over.
    """

    def __init__(self, path: str, names: Sequence[str], labels: Sequence[int],
                 meta: StoreMeta):
        self.path = path
        self.partial = path + PARTIAL_SUFFIX
        self.sidecar = self.partial + ".json"
        self.names = list(names)
        self.labels = [int(v) for v in labels]
        meta.layout = "released"
        self.meta = meta
        self.file: Optional[h5py.File] = None
        self.restarted = False
        if os.path.exists(path):
            self._check_complete_file(path, meta)
            return
        if os.path.exists(self.partial) and self._resume(meta):
            return
        self.file = h5py.File(self.partial, "w")
        for key, value in self.meta.attrs().items():
            self.file.attrs[key] = value
        self.file.attrs["num_images"] = len(self.names)
        self.file.attrs["complete"] = 0
        self.file.attrs["done_units"] = 0
        for group in RELEASED_GROUPS:
            self.file.create_group(group)
        self.file.flush()
        tmp = self.sidecar + ".tmp"
        with open(tmp, "w") as handle:
            json.dump({"names": self.names, "labels": self.labels}, handle)
        os.replace(tmp, self.sidecar)
        self.done_units = 0

    def _check_complete_file(self, path: str, meta: StoreMeta) -> None:
        with _open_h5(path, "r", flag="existing file") as f:
            if not _is_released(f) or (_is_ours(f) and "images" in f):
                raise StoreError(f"{path} exists and is not in the released layout; delete it "
                                 "or choose another --save_root")
            if not _is_ours(f):
                raise StoreError(f"{path} exists, written by another program (the released "
                                 "save_h5.py?); delete it or choose another --save_root")
            stored = StoreMeta.from_attrs(f.attrs)
            problems = meta.differences(stored)
            have = set(f["image"].keys())
            if int(f.attrs.get("num_images", -1)) != len(self.names) or \
                    not have.issubset(self.names):
                problems.append("other images")
            if problems:
                raise StoreError(f"{path} exists and was written by another run ("
                                 + "; ".join(problems) + "); delete it or choose another "
                                 "--save_root")
        self.meta = stored
        self.done_units = len(work_units(len(self.names), stored.batch_size))

    def _resume(self, meta: StoreMeta) -> bool:
        """Reopen ``.partial``; ``False`` (file removed) when it cannot be read back."""
        try:
            with open(self.sidecar) as handle:
                run = json.load(handle)
            self.file = h5py.File(self.partial, "r+")
            stored = StoreMeta.from_attrs(self.file.attrs)
            done_units = int(self.file.attrs["done_units"])
            # Everything claimed done must be readable.
            for unit in work_units(len(run["names"]), stored.batch_size)[:done_units]:
                for i in unit:
                    for group in RELEASED_GROUPS:
                        if run["names"][i] in self.file[group]:
                            self.file[group][run["names"][i]][()]
        except Exception:  # noqa: BLE001 -- damaged by a kill in any of many ways: start over
            if self.file is not None:
                try:
                    self.file.close()
                except Exception:  # noqa: BLE001
                    pass
            self.file = None
            for leftover in (self.partial, self.sidecar):
                if os.path.exists(leftover):
                    os.remove(leftover)
            self.restarted = True
            return False
        try:
            _check_same_run(self.partial, meta, self.names, self.labels, stored, run["names"],
                            run["labels"])
        except BaseException:
            self.file.close()
            self.file = None
            raise
        self.meta = stored
        self.done_units = done_units
        return True

    def pending(self) -> List[List[int]]:
        return work_units(len(self.names), self.meta.batch_size)[self.done_units:]

    def write(self, indices, images, maps, valid) -> None:
        units = work_units(len(self.names), self.meta.batch_size)
        if self.done_units >= len(units) or sorted(indices) != units[self.done_units]:
            raise ValueError("the released layout is written one work unit at a time, in order")
        order = np.argsort(np.asarray(indices))
        valid = np.asarray(valid, dtype=bool)[order]
        heatmaps = heatmaps_from_maps(torch.as_tensor(np.asarray(maps)[order]),
                                      self.meta.input_size).numpy()
        images = unnormalized_images(torch.from_numpy(np.asarray(images, dtype=np.uint8)[order]),
                                     self.meta.mean, self.meta.std).numpy()
        for row, i in enumerate(sorted(indices)):
            if not valid[row]:
                continue            # an unreadable image is left out (the released code stops)
            name = self.names[i]
            values = {"image": images[row][None], "cam": heatmaps[row][None],
                      "label": np.array([self.labels[i]], dtype=np.int64)}
            for group, value in values.items():
                existing = self.file[group].get(name)
                if existing is not None and existing.shape == value.shape \
                        and existing.dtype == value.dtype:
                    existing[...] = value           # written just before a kill
                else:
                    if existing is not None:
                        del self.file[group][name]
                    self.file[group].create_dataset(name, data=value)
        self.file.flush()
        self.done_units += 1
        self.file.attrs["done_units"] = self.done_units
        self.file.flush()

    def finish(self) -> None:
        if self.file is None:       # the complete file was there already
            return
        if self.pending():
            raise RuntimeError(f"{self.partial}: not every row is written")
        self.file.attrs["complete"] = 1
        self.file.close()
        self.file = None
        os.replace(self.partial, self.path)
        os.remove(self.sidecar)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


def open_writer(path: str, layout: str, names: Sequence[str], labels: Sequence[int],
                meta: StoreMeta) -> StoreWriter:
    """Create, or resume, the store at ``path`` in ``layout`` (``compact`` or ``released``)."""
    if layout == "compact":
        return CompactWriter(path, names, labels, meta)
    if layout == "released":
        return ReleasedWriter(path, names, labels, meta)
    raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")


# --------------------------------------------------------------------------------------------
# reader

def _is_released(handle: h5py.File) -> bool:
    return all(isinstance(handle.get(g), h5py.Group) for g in RELEASED_GROUPS)


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
    f = _open_h5(path, "r", flag)
    try:
        if _is_ours(f) and "images" in f:
            reader = _open_compact(path, f)
        elif _is_released(f):
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
    meta = StoreMeta.from_attrs(f.attrs) if _is_ours(f) else None
    complete = True
    if meta is not None:
        complete = int(f.attrs.get("complete", 0)) == 1
    missing = 0 if complete else int(f.attrs.get("num_images", len(names))) - len(names)
    return StoreReader(path=path, layout="released", names=names, labels=labels,
                       image_size=tuple(image_shape[1:]), heatmap_size=tuple(cam_shape),
                       meta=meta, valid=np.ones(len(names), dtype=bool), complete=complete,
                       missing=max(missing, 0) if not complete else 0)
