"""The data sets, one module each behind one small interface (:class:`DatasetSpec`).

``DATASETS[name]`` (``ilsvrc``, ``voc``, ``cub``, ``synthetic``) names the classes, the splits
and the file prefix; its ``list_samples(root, split, limit, flag)`` lists the samples (path,
label, boxes in original pixels) and checks the layout. Loading, box scaling and preprocessing are
shared (:mod:`agcam.datasets.common`).
"""
from __future__ import annotations

from typing import Optional

from agcam.datasets import cub, ilsvrc, synthetic, voc
from agcam.datasets.common import (
    IMAGE_EXTENSIONS,
    DataError,
    DatasetSpec,
    Listing,
    Sample,
    ValDataset,
    collate,
    gt_boxes,
    make_loader,
    normalize_images,
)
from agcam.datasets.ilsvrc import IMAGENET_WNIDS, find_samples, wnid_to_index
from agcam.errors import UsageError

DATASETS = {spec.name: spec for spec in (ilsvrc.SPEC, voc.SPEC, cub.SPEC, synthetic.SPEC)}

__all__ = ["DATASETS", "get_dataset", "list_split", "IMAGE_EXTENSIONS", "DataError",
           "DatasetSpec", "Listing", "Sample", "ValDataset", "collate", "gt_boxes", "make_loader",
           "normalize_images", "IMAGENET_WNIDS", "find_samples", "wnid_to_index"]


def get_dataset(name: str, flag: str = "--dataset") -> DatasetSpec:
    """The data set ``name`` names; :class:`UsageError` for an unknown one."""
    try:
        return DATASETS[str(name).lower()]
    except KeyError:
        raise UsageError(f"{flag} {name}: unknown data set; choose from "
                         f"{', '.join(DATASETS)}") from None


def list_split(spec: DatasetSpec, data_root: str, split: Optional[str] = None,
               limit: Optional[int] = None, flag: str = "--data_root") -> Listing:
    """The samples of ``split`` (default: the evaluation split); :class:`UsageError` for a split
    the data set does not have, :class:`DataError` for a bad layout or an empty split."""
    split = split or spec.eval_split
    if split not in spec.splits:
        raise UsageError(f"--split {split}: {spec.name} has the split(s) {', '.join(spec.splits)}")
    listing = spec.list_samples(data_root, split, limit=limit, flag=flag)
    if not listing.samples:
        raise DataError(f"{flag} {data_root}: no usable image in the {spec.name} {split} split "
                        f"({listing.counts()})")
    return listing
