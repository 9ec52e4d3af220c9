"""Attention Guided CAM (AGCAM) for timm Vision Transformers, with its baselines and evaluations.

The face of the package: everything a user needs to explain a model is importable from here::

    from agcam import create_model, get_explainer, to_heatmap
    predictions, maps = get_explainer("agcam", create_model()).explain(images)

The methods (``agcam.method`` and the ``baselines`` package) register themselves with
``agcam.registry`` when it first looks a name up; ``agcam`` does not import ``baselines``.

The names are loaded when first used (a module ``__getattr__``, PEP 562): importing ``agcam`` or
one of its command-line modules imports no torch, so that ``--help`` answers at once.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

__all__ = ["AGCAM", "Explainer", "Explanation", "available_methods", "build_transform",
           "create_model", "evaluate", "get_explainer", "load_image", "method_label",
           "ordered_methods", "register", "sample_image", "to_heatmap", "zero_shot"]

#: the modules above the face whose names it shows (agcam.evaluate: the runner's Python face)
ABOVE = ("agcam.evaluation.run",)

if TYPE_CHECKING:  # pragma: no cover - what static tools see
    from agcam.clip import zero_shot
    from agcam.evaluation.run import evaluate
    from agcam.explainer import Explainer, Explanation
    from agcam.maps import to_heatmap
    from agcam.method import AGCAM
    from agcam.registry import (
        available_methods,
        get_explainer,
        method_label,
        ordered_methods,
        register,
    )
    from agcam.samples import sample_image
    from models.vit import build_transform, create_model, load_image


def __getattr__(name: str):
    """The public names, loaded together on the first use of any of them."""
    if name not in __all__:
        raise AttributeError(f"module 'agcam' has no attribute {name!r}")
    import importlib

    from agcam import clip, explainer, maps, method, registry, samples
    from models import vit
    # names from the layers above the face, found by module name (as the registry finds the
    # method packages), so that agcam's own modules import no package above them
    above = [importlib.import_module(module) for module in ABOVE]
    for module in (explainer, maps, method, registry, samples, vit, clip, *above):
        for public in __all__:
            if hasattr(module, public):
                globals()[public] = getattr(module, public)
    return globals()[name]


def __dir__():
    return sorted(set(globals()) | set(__all__))
