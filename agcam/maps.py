"""Helpers that turn raw ``[B, h, w]`` explanation maps into images: upsampling and normalising."""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F


def upsample(maps: torch.Tensor, size: Tuple[int, int], antialias: bool = False) -> torch.Tensor:
    """``[B, h, w] -> [B, H, W]``, bilinear with ``align_corners=False`` (as released).

    ``antialias=True`` is what ``torchvision.transforms.Resize`` does (the released
    ``save_h5.py``): the same weights when upsampling, other float rounding.
    """
    return F.interpolate(maps[:, None].float(), size=tuple(int(s) for s in size),
                         mode="bilinear", align_corners=False, antialias=antialias)[:, 0]


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


def to_heatmap(maps: torch.Tensor, size: Tuple[int, int], antialias: bool = False
               ) -> torch.Tensor:
    """Raw maps to input-sized heatmaps in [0, 1]: upsample, then min-max normalise.

    The released ``localization.py`` upsamples plainly (the default); its ``save_h5.py`` with
    ``antialias=True`` (see :func:`upsample`)."""
    return minmax_normalize(upsample(maps, size, antialias=antialias))
