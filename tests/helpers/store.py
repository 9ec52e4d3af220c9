"""Reading whole HDF5 stores, to compare two files' content."""
from __future__ import annotations

import h5py
import numpy as np


def read_all(path):
    """Every dataset and root attribute of an HDF5 file (to compare two files' content)."""
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()])
                     if isinstance(obj, h5py.Dataset) else None)
        out["@attrs"] = {k: (v.tolist() if hasattr(v, "tolist") else v)
                         for k, v in f.attrs.items()}
    return out


def assert_same_content(a, b, maps_atol=0.0):
    left, right = read_all(a), read_all(b)
    assert set(left) == set(right)
    for key in left:
        if key == "@attrs":
            assert left[key] == right[key]
        elif maps_atol and (key == "maps" or key.startswith("cam/")):
            np.testing.assert_allclose(left[key], right[key], rtol=0, atol=maps_atol)
        else:
            assert np.array_equal(left[key], right[key]), key


