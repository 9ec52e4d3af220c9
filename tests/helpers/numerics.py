"""Error measures and the float32 bounds that hold on any CPU (absolute differences added, one
division by the compared map's maximum)."""
from __future__ import annotations

import numpy as np
import torch

from tests.helpers.golden import FLOAT32_ALLOWANCE, FLOAT64_AGREEMENT


def relative_error(actual, expected) -> float:
    """max |actual - expected| / max |expected| (the tolerance measure of the issues)."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    return float(np.abs(actual - expected).max() / np.abs(expected).max())


def correlation(a, b) -> float:
    """Pearson correlation of two arrays, flattened."""
    return float(np.corrcoef(np.ravel(np.asarray(a, dtype=np.float64)),
                             np.ravel(np.asarray(b, dtype=np.float64)))[0, 1])


def max_abs(array) -> float:
    return float(np.abs(np.asarray(array, dtype=np.float64)).max())


def abs_error(actual, expected) -> float:
    """max |actual - expected|: the absolute differences the bounds below add up."""
    return max_abs(np.asarray(actual, dtype=np.float64) - np.asarray(expected, dtype=np.float64))


def released_spread(reference, reference64, key) -> np.ndarray:
    """Per image: max |released float32 - released float64| of the maps ``key`` (absolute). A
    float32 comparison with ``reference.npz`` cannot be tighter."""
    return np.array([abs_error(reference[key][i], reference64[key + "64"][i])
                     for i in range(len(reference[key]))])


def float32_bounds(reference, reference64, key, own_spread=None) -> np.ndarray:
    """Per image: the largest ``max |ours32 - released32|`` (absolute) that float32 alone can
    explain, on any CPU. Divide it, and the error it bounds, once by the compared map's maximum
    ``max |released32|`` for a relative figure.

    Derivation. For every pixel p, the triangle inequality through the two float64 maps gives
    ``|o32 - r32| <= |r32 - r64| + |r64 - o64| + |o64 - o32|``; taking the maximum over p of
    each side, the maximum of a sum is at most the sum of the maxima:

        max|o32 - r32| <= max|r32 - r64|                  (the released spread, measured)
                          + FLOAT64_AGREEMENT * max|r64|  (our float64 vs theirs, proven in
                                                           tests/test_exactness.py)
                          + max|o64 - o32|                (our own float32 rounding)

    Only absolute differences add up: ratios with different denominators (``max|r64|`` here,
    ``max|r32|`` there) do not obey the triangle inequality (issue 15: LRP's image 0 has
    ``max|r32| / max|r64| = 0.83``, which turned a true 0.166 into 0.199).

    ``own_spread`` is ``max|o64 - o32|`` per image, measured on the same run as the float32 maps
    (LRP, whose divisions by near-zero sums amplify the last bit); by default it is the stated
    :data:`FLOAT32_ALLOWANCE` times ``max|r64|`` (AGCAM, Rollout).
    """
    maxima64 = np.array([max_abs(m) for m in reference64[key + "64"]])
    own = FLOAT32_ALLOWANCE * maxima64 if own_spread is None else np.asarray(own_spread)
    return released_spread(reference, reference64, key) + FLOAT64_AGREEMENT * maxima64 + own


def float32_spread(maps32, maps64) -> np.ndarray:
    """Per image: max |float32 map - float64 map| of the same method (absolute)."""
    return np.array([abs_error(a, b) for a, b in zip(maps32, maps64)])


def heatmap_bands(maps64, bounds, size, antialias=False):
    """``(heatmaps, delta)``: the float64 heatmaps of ``maps64`` (upsampled as the scripts do,
    min-max normalised) and, per image, how far a float32 heatmap of maps within ``bounds``
    (absolute,
    ``max |m' - m| <= eta``: :func:`float32_bounds`) of ``maps64`` can be from them.

    With ``eta`` the bound, upsampling (convex combinations) moves no pixel by more than
    ``eta``, the min and the max neither; so ``(u - lo) / (hi - lo)`` moves by at most
    ``4 eta / (span - 2 eta)``; 1e-6 more for float32's own rounding of these steps.
    """
    import torch.nn.functional as F
    maps = torch.as_tensor(np.asarray(maps64), dtype=torch.float64)
    up = F.interpolate(maps[:, None], size=tuple(size), mode="bilinear", align_corners=False,
                       antialias=antialias)[:, 0]
    flat = up.reshape(len(up), -1)
    low, high = flat.min(dim=1).values, flat.max(dim=1).values
    span = high - low
    eta = torch.as_tensor(np.asarray(bounds, dtype=np.float64))
    delta = 4 * eta / (span - 2 * eta) + 1e-6
    heatmaps = (up - low[:, None, None]) / span[:, None, None]
    return heatmaps.numpy(), delta.numpy()


def threshold_is_determined(heatmap64, delta, threshold) -> bool:
    """Whether every float32 heatmap within ``delta`` of ``heatmap64`` draws the same box mask at
    ``threshold``.

    The box mask (the union of the bounding boxes of the regions ``> threshold``) only grows with
    the region: each region of a smaller mask lies inside one region of a larger one, and so does
    its bounding box. Every such heatmap's region lies between ``heatmap64 > threshold + delta``
    and ``heatmap64 >= threshold - delta``; when those two draw the same box mask, so does it.
    """
    from agcam.evaluation.boxes import boxes_to_mask, mask_to_boxes
    size = heatmap64.shape
    inner = boxes_to_mask(mask_to_boxes(heatmap64 > threshold + delta), size)
    outer = boxes_to_mask(mask_to_boxes(heatmap64 >= threshold - delta), size)
    return bool(np.array_equal(inner, outer))


