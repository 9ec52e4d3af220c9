"""The compact layout's writer (see :mod:`agcam.store.metadata` for the format)."""
from __future__ import annotations

import os
from typing import List, Sequence

import h5py
import numpy as np

from agcam.store.metadata import (
    StoreError,
    StoreMeta,
    StoreWriter,
    check_same_run,
    dcpl_early,
    is_ours,
    is_released,
    open_h5,
    work_units,
)


class CompactWriter(StoreWriter):
    """Our layout (module docstring). Creates ``path`` or resumes it."""

    def __init__(self, path: str, names: Sequence[str], labels: Sequence[int],
                 meta: StoreMeta):
        self.path = path
        self.names = list(names)
        meta.layout = "compact"
        if os.path.exists(path):
            self.file = open_h5(path, "r+", flag="existing file")
            try:
                if not (is_ours(self.file) and "images" in self.file):
                    kind = "the released layout" if is_released(self.file) else "another format"
                    raise StoreError(f"{path} exists in {kind}; delete it, choose another "
                                     "--save_root, or pass --layout released")
                stored = StoreMeta.from_attrs(self.file.attrs)
                stored_names = [n.decode() if isinstance(n, bytes) else str(n)
                                for n in self.file["names"][()]]
                check_same_run(path, meta, names, labels, stored, stored_names,
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
        grid_h, grid_w = self.meta.map_size           # the grid, or the input size
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
                f.create_dataset(name, shape=shape, dtype=dtype, dcpl=dcpl_early(chunks))
            f["done"][...] = 0
            f["valid"][...] = 0
        # The file appears under its name only once its structure is complete.
        os.replace(tmp, path)
        self.file = open_h5(path, "r+", flag="new file")

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


