"""Attention Guided CAM (AGCAM) for timm Vision Transformers, with its baselines and evaluations."""
from agcam.explainer import Explainer, available_methods, get_explainer, register
from agcam.method import AGCAM

__all__ = ["AGCAM", "Explainer", "available_methods", "get_explainer", "register"]
