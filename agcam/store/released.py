"""The released layout's writer, as the authors' ``save_h5.py`` lays the file out (see
:mod:`agcam.store.metadata`)."""
from __future__ import annotations

import json
import os
from typing import List, Optional, Sequence

import h5py
import numpy as np
import torch

from agcam.store.metadata import (
    PARTIAL_SUFFIX,
    RELEASED_GROUPS,
    StoreError,
    StoreMeta,
    StoreWriter,
    check_same_run,
    heatmaps_from_maps,
    is_ours,
    is_released,
    open_h5,
    unnormalized_images,
    work_units,
)


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
        with open_h5(path, "r", flag="existing file") as f:
            if not is_released(f) or (is_ours(f) and "images" in f):
                raise StoreError(f"{path} exists and is not in the released layout; delete it "
                                 "or choose another --save_root")
            if not is_ours(f):
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
            check_same_run(self.partial, meta, self.names, self.labels, stored, run["names"],
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


