"""Boxes and masks: ground-truth box masks and the box a heatmap draws, as the released code does.

Boxes are ``(xmin, ymin, xmax, ymax)`` integer pixel coordinates, ``x`` along the width. A mask is
the union of its boxes filled *inclusively*, ``mask[ymin:ymax + 1, xmin:xmax + 1] = True``: a box
drawn from an OpenCV bounding rectangle ``(x, y, w, h)`` is ``(x, y, x + w, y + h)`` and so covers
one row and one column more than the thresholded region itself. That is what the released
``localization.py`` measures, and the paper's table with it.
"""
from __future__ import annotations

from typing import Iterable, List, Sequence, Tuple, Union

import cv2
import numpy as np
import torch

from agcam.maps import minmax_normalize, upsample

Box = Tuple[int, int, int, int]


def boxes_to_mask(boxes: Iterable[Sequence[int]], input_size: Tuple[int, int]) -> np.ndarray:
    """Union of ``boxes`` filled inclusively, as a ``[H, W]`` bool array (``input_size = (H, W)``).

    No boxes give an empty mask. Coordinates below 0 are clipped to 0 (a negative slice start
    would wrap around); those past the edge are cut by the slicing.
    """
    height, width = int(input_size[0]), int(input_size[1])
    mask = np.zeros((height, width), dtype=bool)
    for xmin, ymin, xmax, ymax in boxes:
        mask[max(int(ymin), 0):int(ymax) + 1, max(int(xmin), 0):int(xmax) + 1] = True
    return mask


def mask_to_boxes(binary: np.ndarray) -> List[Box]:
    """The bounding box ``(x, y, x + w, y + h)`` of every external contour of a ``[H, W]`` mask."""
    binary = np.ascontiguousarray(binary, dtype=np.uint8)
    if not binary.any():
        return []
    # [-2]: findContours returns (image, contours, hierarchy) in OpenCV 3, (contours, hierarchy)
    # in 4 and later.
    contours = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)[-2]
    boxes = []
    for contour in contours:
        x, y, w, h = cv2.boundingRect(contour)
        boxes.append((int(x), int(y), int(x + w), int(y + h)))
    return boxes


def heatmap_to_boxes(heatmap: np.ndarray, threshold: float) -> List[Box]:
    """Boxes around the regions of a ``[H, W]`` heatmap in [0, 1] whose pixels are ``> threshold``.

    The comparison is made in the heatmap's dtype (float32 for the explainers' maps), as the
    released code compares a float32 array with the threshold.
    """
    heatmap = np.asarray(heatmap)
    return mask_to_boxes(heatmap > np.asarray(threshold, dtype=heatmap.dtype))


def predicted_mask(raw_map_or_heatmap: Union[np.ndarray, torch.Tensor], threshold: float,
                   input_size: Tuple[int, int]) -> np.ndarray:
    """The localization mask of one ``[h, w]`` map: ``[H, W]`` bool.

    Upsample bilinearly (``align_corners=False``) to ``input_size`` when the map is smaller, min-max
    normalise to [0, 1], keep pixels ``> threshold``, take the bounding box of every external
    contour, fill their union inclusively. A constant map has no region to show and gives an empty
    mask (the released code divides by zero there).
    """
    maps = torch.as_tensor(raw_map_or_heatmap).detach().float()
    if maps.dim() != 2:
        raise ValueError(f"expected one [h, w] map, got shape {tuple(maps.shape)}")
    maps = maps[None]
    if tuple(maps.shape[-2:]) != tuple(input_size):
        maps = upsample(maps, input_size)
    heatmap = minmax_normalize(maps)[0].cpu().numpy()
    return boxes_to_mask(heatmap_to_boxes(heatmap, threshold), input_size)
