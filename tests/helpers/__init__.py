"""What the tests share: the golden set's paths and allowances, error measures and float32 bounds,
the model variants, data-set trees and script runners. No test module imports another; they all
import from here (fixtures live in ``tests/conftest.py``)."""
from tests.helpers.golden import (
                                  FLOAT32_ALLOWANCE,
                                  FLOAT64_AGREEMENT,
                                  GOLDEN,
                                  GOLDEN_ILSVRC,
                                  GOLDEN_MODEL_NAME,
                                  GOLDEN_WEIGHTS,
                                  PAPER_MAPS,
                                  PROBABILITY_ALLOWANCE,
                                  ROOT,
)
from tests.helpers.numerics import (
                                  abs_error,
                                  correlation,
                                  float32_bounds,
                                  float32_spread,
                                  heatmap_bands,
                                  max_abs,
                                  relative_error,
                                  released_spread,
                                  threshold_is_determined,
)
from tests.helpers.variants import VARIANTS

__all__ = ["FLOAT32_ALLOWANCE", "FLOAT64_AGREEMENT", "GOLDEN", "GOLDEN_ILSVRC", "GOLDEN_MODEL_NAME",
           "GOLDEN_WEIGHTS", "PAPER_MAPS", "PROBABILITY_ALLOWANCE", "ROOT", "VARIANTS", "abs_error",
           "correlation", "float32_bounds", "float32_spread", "heatmap_bands", "max_abs",
           "relative_error", "released_spread", "threshold_is_determined"]
