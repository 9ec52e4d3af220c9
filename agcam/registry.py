"""The registry of explainers by command-line name.

It imports no method: each method module registers itself with :func:`register` when it is
imported, and the package's ``__init__`` imports them (``agcam.method`` and ``baselines``), the
way timm's ``@register_model`` works. The registry sits at the bottom of the import graph and the
methods above it, so no two modules import each other.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Dict, Tuple

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

    from agcam.explainer import Explainer

REGISTRY: Dict[str, Callable[..., "Explainer"]] = {}


def register(name: str):
    """Class decorator: make an explainer available under a command-line name."""
    def wrap(cls):
        if name in REGISTRY and REGISTRY[name] is not cls:
            raise ValueError(f"two explainers registered as {name!r}")
        cls.name = name
        REGISTRY[name] = cls
        return cls
    return wrap


def available_methods() -> Tuple[str, ...]:
    """The registered names, sorted."""
    return tuple(sorted(REGISTRY))


def get_explainer(name: str, model: "nn.Module", precision: str = "fp32",
                  **options) -> "Explainer":
    """The explainer registered as ``name`` (``agcam``, ``rollout``, ``lrp``, ...) on ``model``,
    running at ``precision`` (``fp32``, ``tf32``, ``bf16``; see :mod:`agcam.precision`);
    ``ValueError`` if the method refuses that precision."""
    if name not in REGISTRY:
        raise KeyError(f"unknown method {name!r}; choose from {', '.join(sorted(REGISTRY))}")
    explainer = REGISTRY[name](model, **options)
    explainer.precision = precision
    return explainer
