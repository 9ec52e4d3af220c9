"""The HDF5 store: what ``save_h5.py`` writes and ``ABPC.py`` reads.

* :mod:`agcam.store.metadata`: the format (both layouts described there), the file's attributes,
  paths, the released heatmap recipe and what every writer does;
* :mod:`agcam.store.compact` and :mod:`agcam.store.released`: the two layouts' writers;
* :mod:`agcam.store.reader`: :func:`open_store` for either layout;
* :mod:`agcam.store.export`: the ``save_h5.py`` loop (explain, write, resume).
"""
from __future__ import annotations

import os
from typing import Optional, Sequence, Tuple

from agcam.store.compact import CompactWriter
from agcam.store.metadata import (
    FORMAT,
    FORMAT_VERSION,
    HEATMAP_RECIPE,
    LAYOUTS,
    PARTIAL_SUFFIX,
    PREFIXES,
    StoreError,
    StoreMeta,
    StoreWriter,
    heatmaps_from_maps,
    store_path,
    unnormalized_images,
    work_units,
)
from agcam.store.reader import StoreBatch, StoreReader, open_store
from agcam.store.released import ReleasedWriter

__all__ = ["FORMAT", "FORMAT_VERSION", "HEATMAP_RECIPE", "LAYOUTS", "PARTIAL_SUFFIX", "PREFIXES",
           "CompactWriter", "ReleasedWriter", "StoreBatch", "StoreError", "StoreMeta",
           "StoreReader", "StoreWriter", "count_kept", "heatmaps_from_maps", "open_store",
           "open_writer",
           "store_path", "unnormalized_images", "work_units"]


def open_writer(path: str, layout: str, names: Sequence[str], labels: Sequence[int],
                meta: StoreMeta) -> StoreWriter:
    """Create, or resume, the store at ``path`` in ``layout`` (``compact`` or ``released``)."""
    if layout == "compact":
        return CompactWriter(path, names, labels, meta)
    if layout == "released":
        return ReleasedWriter(path, names, labels, meta)
    raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")


def count_kept(path: str) -> Optional[Tuple[int, int]]:
    """``(images written, images of the run)`` of the store at ``path``, complete or
    interrupted (either layout), or ``None`` when nothing is there: what a resumed run keeps."""
    import h5py
    if os.path.exists(path):
        with h5py.File(path, "r") as f:
            total = int(f.attrs.get("num_images", 0))
            if "done" in f:                                     # compact
                return int(f["done"][()].astype(bool).sum()), total
            return total, total                                 # released, complete
    partial = path + PARTIAL_SUFFIX
    if os.path.exists(partial):                                 # released, interrupted
        with h5py.File(partial, "r") as f:
            total = int(f.attrs.get("num_images", 0))
            units = work_units(total, int(f.attrs["batch_size"]))
            return sum(len(u) for u in units[:int(f.attrs.get("done_units", 0))]), total
    return None
