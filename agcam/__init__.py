"""Attention Guided CAM (AGCAM) for timm Vision Transformers, with its baselines and evaluations.

The face of the package: everything a user needs to explain a model is importable from here::

    from agcam import create_model, get_explainer, to_heatmap
    predictions, maps = get_explainer("agcam", create_model()).explain(images)

The methods (``agcam.method`` and the ``baselines`` package) register themselves with
:mod:`agcam.registry` when it first looks a name up; ``agcam`` does not import ``baselines``.
"""
from agcam.explainer import Explainer, Explanation
from agcam.maps import to_heatmap
from agcam.method import AGCAM
from agcam.registry import available_methods, get_explainer, method_label, ordered_methods, register
from models.vit import build_transform, create_model, load_image

__all__ = ["AGCAM", "Explainer", "Explanation", "available_methods", "build_transform",
           "create_model", "get_explainer", "load_image", "method_label", "ordered_methods",
           "register", "to_heatmap"]
