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

from tests.helpers import float32_bounds, float32_spread  # noqa: E402
from tests.helpers.golden import GOLDEN, GOLDEN_MODEL_NAME, GOLDEN_WEIGHTS, PAPER_MAPS  # noqa: E402
from tests.helpers.variants import VARIANTS  # noqa: E402

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
    """``get(method)``: per image, :func:`float32_bounds` (absolute) of our float32 maps against
    the released ones: the stated :data:`FLOAT32_ALLOWANCE` for AGCAM and Rollout, this run's
    measured float32-vs-float64 spread for LRP."""
    def get(method):
        own = None
        if method == "lrp":
            own = float32_spread(golden_maps(method)[1], golden_maps(method, float64=True)[1])
        return float32_bounds(golden_reference, golden_reference64, PAPER_MAPS[method], own)
    return get


@pytest.fixture(scope="session", params=sorted(VARIANTS))
def variant(request):
    """``(model, images, grid)`` for each of :data:`VARIANTS`: random weights, created once per
    session, its geometry checked against the table; ``images`` a random batch of its input."""
    from models import model_geometry
    from tests.helpers.variants import make_variant
    torch.manual_seed(0)
    model = make_variant(request.param)
    grid, prefix, batch = VARIANTS[request.param]
    geometry = model_geometry(model)
    assert geometry.grid == grid and geometry.num_prefix_tokens == prefix
    return model, torch.randn(batch, 3, *geometry.input_size), grid




@pytest.fixture(scope="session")
def trees(tmp_path_factory):
    """The VOC and CUB fixture trees (tests.helpers.datasets), made once per session."""
    from tests.helpers.datasets import make_cub, make_voc
    root = tmp_path_factory.mktemp("datasets")
    return {"voc": make_voc(root / "voc"), "cub": make_cub(root / "cub")}
