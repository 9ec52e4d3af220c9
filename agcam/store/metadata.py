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
                                      grid, or at the input size for a pixel-level method
                                      (``map_size``); the heatmap is :func:`heatmaps_from_maps`
                                      of it (an input-size map is only min-max normalised)
``valid``    ``[N]`` uint8            0 for an image that could not be decoded
``done``     ``[N]`` uint8            1 once the row is written; set only after the row's data
                                      is flushed
=========== ======================== ======================================================

Root attributes describe the file (:class:`StoreMeta`): format and version, method, model,
checkpoint and its SHA-256, timm and torch versions, input size, patch grid, the maps' size
(``map_size``, also written as ``heatmap_resolution``: the grid, or the input size for a
pixel-level method; a file without it has maps on the grid), mean, std, the batch size the rows
were computed with, the ``precision`` of the maps (``fp32``, ``tf32``, ``bf16``; a file without
it was written at ``fp32``), the ``target`` whose maps it holds (``label``, as released, or
``predicted``: the model's top-1; a file without it holds the label's) and ``complete`` (0 until
every row is done), and what made it: ``checkpoint_path`` (absolute), ``data_root``, ``split``
and ``preprocessing`` (the transform, described; files of earlier versions lack these four and
still read). A pixel-level method's maps are ``H x W`` float32, 196 KiB an image more at
224 x 224 than the patch grid's.

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


import os
from dataclasses import asdict, dataclass
from typing import Dict, List, Sequence, Tuple

import h5py
import numpy as np
import torch

from agcam.datasets.common import normalize_images
from agcam.errors import UsageError
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
    return to_heatmap(maps.detach().to("cpu", torch.float32), size, recipe="abpc")


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
    #: the class the maps explain: "label" (as released) or "predicted" (files without it: label)
    target: str = "label"
    #: the ``[h, w]`` of the stored maps: ``grid`` (empty, the default) or the input size for a
    #: pixel-level method (``Explainer.resolution == "pixel"``)
    map_size: Tuple[int, ...] = ()
    #: what made it, so that ABPC.py and perturbation.py need only --h5_root: the checkpoint's
    #: absolute path, the data set's root and split, and the preprocessing (the transform's
    #: description); empty in files written before they were recorded
    checkpoint_path: str = ""
    data_root: str = ""
    split: str = ""
    preprocessing: str = ""

    def __post_init__(self):
        self.map_size = tuple(int(v) for v in self.map_size) or tuple(self.grid)

    def attrs(self) -> Dict[str, object]:
        out = {"format": FORMAT, "format_version": FORMAT_VERSION, "heatmap": HEATMAP_RECIPE}
        for key, value in asdict(self).items():
            out[key] = np.asarray(value) if isinstance(value, (tuple, list)) else value
        out["heatmap_resolution"] = np.asarray(self.map_size)
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
                   precision=text("precision", "fp32"), target=text("target", "label"),
                   map_size=ints("map_size") if "map_size" in attrs else (),
                   checkpoint_path=text("checkpoint_path"), data_root=text("data_root"),
                   split=text("split"), preprocessing=text("preprocessing"))

    def differences(self, other: "StoreMeta") -> List[str]:
        """The settings in which ``other`` differs (those that change the stored values)."""
        keys = ("method", "model", "checkpoint_sha256", "input_size", "grid", "mean", "std",
                "layout", "precision", "target", "map_size")
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


def is_ours(handle: h5py.File) -> bool:
    value = handle.attrs.get("format", "")
    return (value.decode() if isinstance(value, bytes) else str(value)) == FORMAT


def open_h5(path: str, mode: str = "r", flag: str = "--h5_file") -> h5py.File:
    try:
        return h5py.File(path, mode)
    except FileNotFoundError:
        raise StoreError(f"{flag} {path}: no such file") from None
    except (OSError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise StoreError(f"{flag} {path}: not a readable HDF5 file ({reason})") from None



# -- what every layout's writer does --------------------------------------------------------
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


def check_same_run(path: str, meta: StoreMeta, names: Sequence[str], labels: Sequence[int],
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


def dcpl_early(chunks: Tuple[int, ...]) -> h5py.h5p.PropDCID:
    """Chunked, every chunk allocated at creation, no fill writes: later writes only fill
    allocated space, never the chunk index."""
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_chunk(chunks)
    dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
    dcpl.set_fill_time(h5py.h5d.FILL_TIME_NEVER)
    return dcpl


def is_released(handle: h5py.File) -> bool:
    return all(isinstance(handle.get(g), h5py.Group) for g in RELEASED_GROUPS)
