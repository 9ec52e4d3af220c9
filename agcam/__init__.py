"""Attention Guided CAM (AGCAM) for timm Vision Transformers, with its baselines and evaluations.

Importing the package registers every method: ``agcam.method`` and ``baselines`` register
themselves with :mod:`agcam.registry`, which imports none of them.
"""
from agcam.explainer import Explainer
from agcam.registry import available_methods, get_explainer, register
from agcam.method import AGCAM  # noqa: E402  (registers "agcam")
import baselines  # noqa: E402,F401  (registers the baselines)

__all__ = ["AGCAM", "Explainer", "available_methods", "get_explainer", "register"]
