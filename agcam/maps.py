"""Raw ``[B, h, w]`` explanation maps to input-sized heatmaps in [0, 1]: named recipes.

Each evaluation upsamples the raw map its own way, as the code it reproduces does; the recipe is
named, so a figure, a metric and a stored file say which one they used:

* ``"localization"``: ``F.interpolate(mode="bilinear", align_corners=False)`` then per-map min-max,
  as the released ``localization.py`` (and Chefer's perturbation and segmentation tests, whose
  bilinear upsampling by the patch size is the same operation);
* ``"chefer"``: Chefer's perturbation test and RISE's insertion/deletion here; numerically
  ``"localization"`` (upsampling by the patch size is upsampling to the input size), named apart
  so that their outputs say which protocol they follow;
* ``"abpc"``: the same with ``antialias=True``, what ``torchvision.transforms.Resize`` computes in
  the released ``save_h5.py`` (the same weights when upsampling, other float rounding);
* :func:`wsol_scoremap`, wsolevaluation's score map (MaxBoxAcc): one map in float64, bicubic
  (``cv2.INTER_CUBIC``), then min-max; a NumPy array, not a recipe of :func:`to_heatmap`.

A map already at the requested size (a pixel-level method) is only normalised.
"""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F

#: recipe name -> whether the bilinear upsampling is antialiased
RECIPES = {"localization": False, "chefer": False, "abpc": True}


def upsample(maps: torch.Tensor, size: Tuple[int, int], antialias: bool = False) -> torch.Tensor:
    """``[B, h, w] -> [B, H, W]``, bilinear with ``align_corners=False`` (as released), in
    float32; ``antialias=True`` is ``torchvision.transforms.Resize``'s."""
    size = tuple(int(s) for s in size)
    if tuple(maps.shape[-2:]) == size:
        return maps.float()
    return F.interpolate(maps[:, None].float(), size=size, mode="bilinear", align_corners=False,
                         antialias=antialias)[:, 0]


def minmax_normalize(maps: torch.Tensor) -> torch.Tensor:
    """Scale every map to [0, 1] on its own: ``(m - min) / (max - min)``.

    A constant map has no ranking to show; it becomes all zeros instead of the released code's
    0/0 = NaN.
    """
    flat = maps.reshape(maps.shape[0], -1)
    low = flat.min(dim=1).values.reshape(-1, *([1] * (maps.dim() - 1)))
    high = flat.max(dim=1).values.reshape(-1, *([1] * (maps.dim() - 1)))
    span = high - low
    safe = torch.where(span > 0, span, torch.ones_like(span))
    return torch.where(span > 0, (maps - low) / safe, torch.zeros_like(maps))


def to_heatmap(maps: torch.Tensor, size: Tuple[int, int], recipe: str = "localization"
               ) -> torch.Tensor:
    """Raw maps ``[B, h, w]`` to input-sized heatmaps ``[B, H, W]`` in [0, 1] by ``recipe``
    (``"localization"`` or ``"abpc"``, see the module docstring)."""
    if recipe not in RECIPES:
        raise ValueError(f"recipe must be one of {', '.join(RECIPES)}, got {recipe!r}")
    return minmax_normalize(upsample(maps, size, antialias=RECIPES[recipe]))


def wsol_scoremap(raw_map, size: Tuple[int, int]):
    """The score map of wsolevaluation (Choe et al., CVPR 2020; ``inference.py``): one raw
    ``[h, w]`` map as float64, resized to ``size = (H, W)`` with ``cv2.INTER_CUBIC``, then
    ``normalize_scoremap``: all zeros when the map is constant or has a NaN, else
    ``s -= s.min(); s /= s.max()``. Returns a float64 ``[H, W]`` array in [0, 1].

    Bicubic interpolation overshoots, so the min-max comes after the resize, as there.
    """
    import cv2
    import numpy as np

    if isinstance(raw_map, torch.Tensor):
        raw_map = raw_map.detach().cpu().double().numpy()
    cam = np.asarray(raw_map, dtype=np.float64)
    if cam.ndim != 2:
        raise ValueError(f"expected one [h, w] map, got shape {cam.shape}")
    height, width = int(size[0]), int(size[1])
    cam = cv2.resize(cam, (width, height), interpolation=cv2.INTER_CUBIC)
    if np.isnan(cam).any() or cam.min() == cam.max():
        return np.zeros_like(cam)
    cam -= cam.min()
    cam /= cam.max()
    return cam
