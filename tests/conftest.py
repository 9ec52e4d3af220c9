"""Shared fixtures: the reference ("golden") set produced by the authors' released code."""
from __future__ import annotations

import copy
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

GOLDEN = ROOT / "tests" / "fixtures" / "golden"
GOLDEN_WEIGHTS = GOLDEN / "weights.pth"
GOLDEN_ILSVRC = GOLDEN / "ILSVRC"
GOLDEN_MODEL_NAME = "vit_agcam_tiny_patch16_224"
#: Allowance for this machine's own float32 rounding of the well-conditioned methods (AGCAM,
#: Rollout: no division by near-zero sums), relative max error per image, on top of the released
#: code's own float32-vs-float64 spread (3e-7 to 1.2e-6 for them, golden README): ten times the
#: largest such spread. It is a property of float32, not of one CPU's kernels.
FLOAT32_ALLOWANCE = 1e-5
#: How far our float64 maps may be from the released float64 maps (the exactness claims of
#: tests/test_exactness.py; image 3 of LRP is the loosest at 1e-7).
FLOAT64_AGREEMENT = 1e-7
#: Allowance on a softmax probability from the golden model's float32 forward on identical inputs
#: (the ABPC curves), absolute: its float32 probabilities are at most 1e-6 from its float64 ones
#: on the golden images, whole or with pixels removed (measured 2.3e-7 to 9.8e-7); twice that for
#: the released run's float32 and ours, five times again for other kernels.
PROBABILITY_ALLOWANCE = 1e-5

if "OMP_NUM_THREADS" not in os.environ:   # else the thread count the run asks for (e.g. 1)
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def pytest_collection_modifyitems(config, items):
    """Tests marked ``cuda`` run only where a CUDA device is present (``pytest -m cuda``)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is false)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


def relative_error(actual, expected) -> float:
    """max |actual - expected| / max |expected| (the tolerance measure of the issues)."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    return float(np.abs(actual - expected).max() / np.abs(expected).max())


def correlation(a, b) -> float:
    """Pearson correlation of two arrays, flattened."""
    return float(np.corrcoef(np.ravel(np.asarray(a, dtype=np.float64)),
                             np.ravel(np.asarray(b, dtype=np.float64)))[0, 1])


def released_spread(reference, reference64, key) -> np.ndarray:
    """Per image: how far the released float32 maps ``key`` are from the released float64 maps
    (relative max error). A float32 comparison with ``reference.npz`` cannot be tighter."""
    return np.array([relative_error(reference[key][i], reference64[key + "64"][i])
                     for i in range(len(reference[key]))])


def float32_bounds(reference, reference64, key, own_spread=None) -> np.ndarray:
    """Per image: the largest relative error of our float32 maps against the released float32
    maps ``key`` that float32 alone can explain, on any CPU.

    Triangle inequality through float64: released float32 -> released float64 (their spread) ->
    our float64 (:data:`FLOAT64_AGREEMENT`) -> our float32 (this machine's own rounding:
    :data:`FLOAT32_ALLOWANCE` for the well-conditioned methods; for LRP, whose divisions by
    near-zero sums amplify the last bit, ``own_spread``, our float32-vs-float64 error measured on
    this machine).
    """
    own = FLOAT32_ALLOWANCE if own_spread is None else np.asarray(own_spread)
    return released_spread(reference, reference64, key) + FLOAT64_AGREEMENT + own


def float32_spread(maps32, maps64) -> np.ndarray:
    """Per image: relative max error of float32 maps against float64 maps of the same method."""
    return np.array([relative_error(a, b) for a, b in zip(maps32, maps64)])


@pytest.fixture(scope="session")
def golden_reference():
    return dict(np.load(GOLDEN / "reference.npz"))


@pytest.fixture(scope="session")
def golden_reference64():
    """The released methods' maps in float64 (``reference64.npz``, golden README)."""
    return dict(np.load(GOLDEN / "reference64.npz"))


@pytest.fixture(scope="session")
def golden_json():
    with open(GOLDEN / "reference.json") as handle:
        return json.load(handle)


@pytest.fixture(scope="session")
def golden_model():
    from models import create_model
    return create_model(GOLDEN_MODEL_NAME, checkpoint=str(GOLDEN_WEIGHTS))


@pytest.fixture(scope="session")
def golden_model64(golden_model):
    """The golden model in float64: where exactness is proven (see tests/test_exactness.py)."""
    return copy.deepcopy(golden_model).double()


@pytest.fixture(scope="session")
def golden_inputs(golden_reference):
    return torch.from_numpy(golden_reference["inputs"])


#: The paper's methods and their maps in reference.npz (predicted class, the paper's settings).
PAPER_MAPS = {"agcam": "agcam_maps", "rollout": "rollout_mean_0.0_maps", "lrp": "lrp_maps"}


@pytest.fixture(scope="session")
def golden_maps(golden_model, golden_model64, golden_inputs):
    """``get(method, float64=False) -> (predictions, maps)`` of the golden images, predicted
    class, default options; computed once per session."""
    from agcam import get_explainer
    cache = {}

    def get(method, float64=False):
        if (method, float64) not in cache:
            model = golden_model64 if float64 else golden_model
            inputs = golden_inputs.double() if float64 else golden_inputs
            cache[method, float64] = get_explainer(method, model).explain(inputs)
        return cache[method, float64]
    return get


@pytest.fixture(scope="session")
def golden_map_bounds(golden_maps, golden_reference, golden_reference64):
    """``get(method)``: per image, :func:`float32_bounds` of our float32 maps against the released
    ones: the stated :data:`FLOAT32_ALLOWANCE` for AGCAM and Rollout, this machine's measured
    float32-vs-float64 spread for LRP."""
    def get(method):
        own = None
        if method == "lrp":
            own = float32_spread(golden_maps(method)[1], golden_maps(method, float64=True)[1])
        return float32_bounds(golden_reference, golden_reference64, PAPER_MAPS[method], own)
    return get


def heatmap_bands(maps64, relative_bounds, size, antialias=False):
    """``(heatmaps, delta)``: the float64 heatmaps of ``maps64`` (upsampled as the scripts do, min-max
    normalised) and, per image, how far a float32 heatmap of maps within ``relative_bounds``
    (relative max error) of ``maps64`` can be from them.

    With ``eta = bound * max|m|``, upsampling (convex combinations) moves no pixel by more than
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
    eta = torch.as_tensor(np.asarray(relative_bounds)) * maps.abs().reshape(len(maps), -1).amax(1)
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
    from agcam.boxes import boxes_to_mask, mask_to_boxes
    size = heatmap64.shape
    inner = boxes_to_mask(mask_to_boxes(heatmap64 > threshold + delta), size)
    outer = boxes_to_mask(mask_to_boxes(heatmap64 >= threshold - delta), size)
    return bool(np.array_equal(inner, outer))


#: The model variants every explainer must handle at random init: name -> (grid, prefix tokens,
#: batch size used in the tests). Own grids (7x7, 24x24), DeiT's two prefix tokens, layer scale.
VARIANTS = {
    "vit_tiny_patch16_224": ((14, 14), 1, 2),
    "vit_small_patch32_224": ((7, 7), 1, 2),
    "vit_base_patch16_384": ((24, 24), 1, 1),
    "deit_tiny_distilled_patch16_224": ((14, 14), 2, 2),
    "deit3_small_patch16_224": ((14, 14), 1, 2),
}


@pytest.fixture(scope="session", params=sorted(VARIANTS))
def variant(request):
    """``(model, images, grid)`` for each of :data:`VARIANTS`: random weights, created once per
    session, its geometry checked against the table; ``images`` a random batch of its input."""
    from models import create_model, model_geometry
    torch.manual_seed(0)
    model = create_model(request.param, pretrained=False)
    grid, prefix, batch = VARIANTS[request.param]
    geometry = model_geometry(model)
    assert geometry.grid == grid and geometry.num_prefix_tokens == prefix
    return model, torch.randn(batch, 3, *geometry.input_size), grid


def require_method(method: str) -> None:
    """Skip only when the baselines package is absent; fail when it is there without the method."""
    from agcam.registry import available_methods
    if method in available_methods():
        return
    try:
        import baselines  # noqa: F401
    except ImportError:
        pytest.skip("baselines not available")
    pytest.fail(f"the baselines package is installed but registers no {method!r} method")
