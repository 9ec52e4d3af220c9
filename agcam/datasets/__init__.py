"""The data sets, one module each behind one small interface (:class:`DatasetSpec`).

``DATASETS[name]`` (``ilsvrc``, ``voc``, ``cub``, ``synthetic``) names the classes, the splits
and the file prefix; its ``list_samples(root, split, limit, flag)`` lists the samples (path,
label, boxes in original pixels) and checks the layout. Loading, box scaling and preprocessing are
shared (:mod:`agcam.datasets.common`).
"""
from __future__ import annotations

from collections import Counter
from typing import Optional, Tuple

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
           "normalize_images", "IMAGENET_WNIDS", "find_samples", "wnid_to_index",
           "class_names"]

#: VOC's run-together names, as words (a prompt reads them)
_VOC_WORDS = {"diningtable": "dining table", "pottedplant": "potted plant",
              "tvmonitor": "tv monitor"}
#: the two ImageNet classes whose WordNet descriptions are both "crane" (OpenAI's CLIP names)
_IMAGENET_SAME = {"n02012849": "crane bird", "n03126707": "construction crane"}


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


def class_names(name: str, data_root: Optional[str] = None, split: Optional[str] = None,
                flag: str = "--data_root") -> Tuple[str, ...]:
    """Readable names of the classes of data set ``name``, class ``i`` at ``i``, for text prompts.

    ``ilsvrc`` and ``imagenet_seg`` (whose labels are ImageNet's): the first synonym of each
    class's WordNet description as timm ships it ("tench", "goldfish"); where two classes share
    it ("maillot" twice) the whole description is kept, and the two "crane" classes are named as
    OpenAI's CLIP names them ("crane bird", "construction crane"), so that no two prompts are
    equal. ``voc``: its names as words ("potted plant"). ``synthetic``: its
    colour and texture ("red striped"). ``cub``: the names of ``data_root``'s ``classes.txt``
    without the number and underscores ("Black footed Albatross")."""
    key = str(name).lower().replace("-", "_")
    if key in ("ilsvrc", "imagenet_seg"):
        from timm.data import ImageNetInfo
        info = ImageNetInfo()
        full = [_IMAGENET_SAME.get(w, info.label_name_to_description(w)) for w in IMAGENET_WNIDS]
        first = [d.split(",")[0].strip() for d in full]
        counts = Counter(first)
        return tuple(f if counts[f] == 1 else d for f, d in zip(first, full))
    if key == "voc":
        return tuple(_VOC_WORDS.get(n, n) for n in voc.VOC_CLASSES)
    if key == "synthetic":
        return tuple(synthetic.CLASSES)
    spec = get_dataset(key)
    listing = list_split(spec, data_root, split, limit=1, flag=flag)
    names = []
    for raw in listing.class_names:
        text = raw.split(".", 1)[1] if raw[:3].isdigit() and "." in raw else raw
        names.append(text.replace("_", " ").strip())
    return tuple(names)
