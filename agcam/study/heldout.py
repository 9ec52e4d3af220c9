"""The learnt model's held-out images as tensors, and the paths of the study.

``samples/synthetic/ILSVRC``: 160 single-object images, 20 per class (ILSVRC layout);
``samples/synthetic/pairs``: 16 two-object images (:mod:`agcam.datasets.synthetic`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, List, Optional, Tuple

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

    from agcam.datasets.common import Sample

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HELDOUT_ROOT = os.path.join(ROOT, "samples", "synthetic", "ILSVRC")
PAIRS_ROOT = os.path.join(ROOT, "samples", "synthetic", "pairs")
FIGURES_DIR = os.path.join(ROOT, "docs", "figures")
LEARNT_MODEL = "vit_agcam_learnt"
THRESHOLD = 0.5


@dataclass
class HeldOut:
    """Images of a set, preprocessed for a model: ``images`` ``[N, 3, H, W]`` (normalised),
    ``labels`` ``[N]``, ``boxes`` per image in model-input pixels, with the class of each box."""

    samples: List["Sample"]
    images: "torch.Tensor"
    labels: "torch.Tensor"
    boxes: List[List[Tuple[int, int, int, int]]]
    box_classes: List[List[int]] = field(default_factory=list)

    @property
    def names(self) -> List[str]:
        return [s.name for s in self.samples]


def load_heldout(model: "nn.Module", root: str = HELDOUT_ROOT, limit: Optional[int] = None
                 ) -> HeldOut:
    """The set under ``root`` (ILSVRC layout) as the scripts read it: the ILSVRC reader's labels,
    :func:`models.vit.build_transform`'s input, the boxes scaled as released."""
    import torch

    from agcam.datasets.common import gt_boxes, read_voc_xml
    from agcam.datasets.ilsvrc import ANNOTATION_DIR, find_samples, wnid_to_index
    from models.vit import build_transform, load_image, model_geometry

    samples = find_samples(root, limit=limit)
    transform = build_transform(model)
    size = model_geometry(model).input_size
    images, boxes, classes = [], [], []
    for sample in samples:
        image = load_image(sample.path)
        images.append(transform(image))
        boxes.append(gt_boxes(sample.boxes, image.width, image.height, size))
        _, _, objects = read_voc_xml(os.path.join(root, ANNOTATION_DIR, sample.name + ".xml"))
        classes.append([wnid_to_index(name) for name, _ in objects])
    return HeldOut(samples, torch.stack(images), torch.tensor([s.label for s in samples]),
                   boxes, classes)


def subset_root(root: str, per_class: int, out: str) -> str:
    """``out``: an ILSVRC-layout folder of links to the first ``per_class`` images (by name) of
    each class under ``root``, with their annotations; made once, reused."""
    from agcam.datasets.ilsvrc import ANNOTATION_DIR, IMAGE_DIR, find_samples

    chosen, seen = [], {}
    for sample in find_samples(root):
        seen[sample.label] = seen.get(sample.label, 0) + 1
        if seen[sample.label] <= per_class:
            chosen.append(sample)
    for sample in chosen:
        relative = os.path.relpath(sample.path, os.path.join(root, IMAGE_DIR))
        links = ((sample.path, os.path.join(out, IMAGE_DIR, relative)),
                 (os.path.join(root, ANNOTATION_DIR, sample.name + ".xml"),
                  os.path.join(out, ANNOTATION_DIR, sample.name + ".xml")))
        for target, link in links:
            os.makedirs(os.path.dirname(link), exist_ok=True)
            if not os.path.lexists(link):
                os.symlink(os.path.abspath(target), link)
    return out
