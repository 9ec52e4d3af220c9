"""What the figures show, computed: top-k classes, input-sized heatmaps and their boxes.

Shared by ``visualization.ipynb`` and ``python -m agcam explain``; drawing lives in
:mod:`agcam.figures.plotting`. Everything runs on the model's device and returns NumPy arrays on
the CPU.
"""
from __future__ import annotations

import functools
import re
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from agcam.explainer import Explainer, Target
from agcam.maps import to_heatmap
from agcam.registry import method_label  # noqa: F401  (re-exported for the figures)

Box = Tuple[float, float, float, float]  # (xmin, ymin, xmax, ymax)

@functools.lru_cache(maxsize=1)
def _imagenet_info():
    from timm.data import ImageNetInfo
    return ImageNetInfo()


def class_names_of(model: nn.Module) -> Optional[Sequence[str]]:
    """The model's own class names (a Hugging Face checkpoint's ``id2label``, kept by
    :func:`models.transformers.from_transformers` as ``label_names``; a registered model's
    ``pretrained_cfg["label_names"]``, as ``vit_agcam_learnt``'s), or ``None``."""
    names = getattr(model, "label_names", None)
    if not names:
        names = (getattr(model, "pretrained_cfg", None) or {}).get("label_names")
    return list(names) if names else None


def class_name(index: int, num_classes: int = 1000,
               names: Optional[Sequence[str]] = None) -> str:
    """The model's own name of a class index when it has ``names``; else the ImageNet-1k
    description (``"tabby, tabby cat"``); ``"class i"`` for a model whose head is not the 1000
    ImageNet classes."""
    if names is not None:
        return str(names[int(index)])
    if num_classes != 1000:
        return f"class {index}"
    return _imagenet_info().index_to_description(int(index))


def parse_class(text: str, num_classes: int = 1000,
                names: Optional[Sequence[str]] = None) -> int:
    """A class given on the command line: an index (``281``), one of the model's own class
    ``names`` (case-insensitive), a wnid (``n02123045``) or an ImageNet-1k name (``tabby`` or
    ``tabby, tabby cat``, case-insensitive)."""
    text = str(text).strip()
    own = [i for i, n in enumerate(names or ()) if str(n).strip().lower() == text.lower()]
    if re.fullmatch(r"\d+", text):
        index = int(text)
    elif len(own) == 1:
        index = own[0]
    elif names is not None:
        problem = "none of the model's class names is" if not own else \
            f"{len(own)} of the model's classes are named"
        raise ValueError(f"class {text!r}: {problem} that; give an index")
    elif num_classes != 1000:
        raise ValueError(f"class {text!r}: this model has {num_classes} classes; give an index")
    elif re.fullmatch(r"n\d{8}", text):
        from agcam.datasets.ilsvrc import (
            wnid_to_index,  # the class index the data sets use
        )
        try:
            index = wnid_to_index(text)
        except KeyError:
            raise ValueError(f"class {text!r}: not an ImageNet-1k wnid") from None
    else:
        wanted = text.lower()
        matches = []
        for i in range(1000):
            description = class_name(i).lower()
            if wanted == description or wanted in (s.strip() for s in description.split(",")):
                matches.append(i)
        if len(matches) != 1:
            problem = "no ImageNet-1k class has" if not matches else \
                f"{len(matches)} classes ({', '.join(map(str, matches))}) have"
            raise ValueError(f"class {text!r}: {problem} that name; give the index or wnid")
        index = matches[0]
    if not 0 <= index < num_classes:
        raise ValueError(f"class {text!r}: outside [0, {num_classes})")
    return index


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def top_k(model: nn.Module, images: torch.Tensor, k: int = 5
          ) -> List[List[Tuple[int, float]]]:
    """Per image, the ``k`` most probable classes as ``(index, softmax probability)``."""
    with torch.no_grad():
        logits = model(images.to(model_device(model)))
    probs = logits.float().softmax(dim=1)
    values, indices = probs.topk(min(k, probs.shape[1]), dim=1)
    return [[(int(i), float(v)) for i, v in zip(row_i, row_v)]
            for row_i, row_v in zip(indices.cpu(), values.cpu())]


def explain_heatmaps(explainer: Explainer, images: torch.Tensor, target: Target = None
                     ) -> Tuple[np.ndarray, np.ndarray]:
    """Run ``explainer`` and return ``(predictions[B], heatmaps[B, H, W])``: every raw map
    upsampled to the model's input size and min-max normalised to [0, 1], as the localization
    metrics threshold them."""
    predictions, maps = explainer.explain(images, target)
    heatmaps = to_heatmap(maps.detach(), explainer.geometry.input_size)
    return predictions.cpu().numpy(), heatmaps.float().cpu().numpy()


def boxes_at(heatmap: np.ndarray, threshold: float = 0.5) -> List[Box]:
    """The boxes of an input-sized [0, 1] heatmap at ``threshold`` (the localization metric's
    boxes, from :func:`agcam.evaluation.boxes.heatmap_to_boxes`), in heatmap pixels."""
    from agcam.evaluation.boxes import (
        heatmap_to_boxes,  # imported here: only the box panels need it
    )
    return [tuple(float(v) for v in box) for box in heatmap_to_boxes(np.asarray(heatmap),
                                                                      threshold)]


def rescale_boxes(boxes: Sequence[Box], from_size: Tuple[int, int], to_size: Tuple[int, int]
                  ) -> List[Box]:
    """Boxes from one ``(width, height)`` to another (model input pixels to image pixels)."""
    sx = to_size[0] / from_size[0]
    sy = to_size[1] / from_size[1]
    return [(x0 * sx, y0 * sy, x1 * sx, y1 * sy) for x0, y0, x1, y1 in boxes]


def num_classes_of(model: nn.Module) -> int:
    return int(getattr(model, "num_classes", 1000))


def class_heatmaps(explainer: Explainer, image: torch.Tensor, classes: Sequence[int]
                   ) -> Dict[int, np.ndarray]:
    """One image's heatmap for each of ``classes`` (``image`` is ``[3, H, W]``), computed as one
    batch. A class-agnostic explainer (Rollout) gives one map whatever the class: it is run once
    and the map is returned under the first class only."""
    if not explainer.class_specific:
        _, heatmaps = explain_heatmaps(explainer, image[None])
        return {int(classes[0]): heatmaps[0]}
    batch = image[None].expand(len(classes), *image.shape)
    _, heatmaps = explain_heatmaps(explainer, batch, [int(c) for c in classes])
    return {int(c): h for c, h in zip(classes, heatmaps)}
