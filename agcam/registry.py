"""The registry of explainers by command-line name, with each method's metadata.

It imports no method: each method module registers itself with :func:`register` when it is
imported (``@register("rollout", label="Attention Rollout", paper=True)``), the way timm's
``@register_model`` works. The registry sits at the bottom of the import graph and the methods
above it, so no two modules import each other, and no two packages: the method packages
(:data:`METHOD_PACKAGES`: ``agcam.method`` and ``baselines``) are found by name, like entry
points, the first time a name is looked up; nothing in ``agcam`` imports ``baselines``.
The decorator is the one place for a method's display label and for whether the paper compares
against it (the paper's methods come first in :func:`ordered_methods`, the order of
``--method all``, the tables and the figures).
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Tuple

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

    from agcam.explainer import Explainer

REGISTRY: Dict[str, Callable[..., "Explainer"]] = {}
#: the packages whose import registers the methods (found by name, see the module docstring)
METHOD_PACKAGES = ("agcam.method", "baselines")
_loaded = False


def load_methods() -> None:
    """Import :data:`METHOD_PACKAGES` once, so that every method has registered itself."""
    global _loaded
    if not _loaded:
        for package in METHOD_PACKAGES:
            importlib.import_module(package)
        _loaded = True


def register(name: str, label: Optional[str] = None, paper: bool = False):
    """Class decorator: make an explainer available under a command-line name.

    Args:
        name: the command-line name (``--method NAME``).
        label: the display name in figures and tables (default: ``name``).
        paper: whether the AGCAM paper's tables report the method (AGCAM, Rollout, LRP).
    """
    def wrap(cls):
        if name in REGISTRY and REGISTRY[name] is not cls:
            raise ValueError(f"two explainers registered as {name!r}")
        cls.name = name
        cls.label = label or name
        cls.paper = bool(paper)
        REGISTRY[name] = cls
        return cls
    return wrap


def available_methods() -> Tuple[str, ...]:
    """The registered names, sorted."""
    load_methods()
    return tuple(sorted(REGISTRY))


def ordered_methods() -> List[str]:
    """Every registered method, the paper's first (the order of ``--method all``); each group
    sorted by name (``agcam``, ``lrp``, ``rollout``, then the others)."""
    names = available_methods()
    return [n for n in names if REGISTRY[n].paper] + [n for n in names if not REGISTRY[n].paper]


def paper_methods() -> List[str]:
    """The methods of the paper's tables, in :func:`ordered_methods` order."""
    return [n for n in ordered_methods() if REGISTRY[n].paper]


def method_label(name: str) -> str:
    """The display label of a registered method (the name itself for an unknown one)."""
    load_methods()
    cls = REGISTRY.get(name)
    return cls.label if cls is not None else name


def method_class(name: str):
    """The registered class of ``name``; ``ValueError`` listing the names otherwise."""
    load_methods()
    if name not in REGISTRY:
        raise ValueError(f"unknown method {name!r}; choose from {', '.join(available_methods())}")
    return REGISTRY[name]


def get_explainer(name: str, model: "nn.Module", precision: str = "fp32",
                  **options) -> "Explainer":
    """The explainer registered as ``name`` (``agcam``, ``rollout``, ``lrp``, ...) on ``model``,
    running at ``precision`` (``fp32``, ``tf32``, ``bf16``; see :mod:`agcam.precision`).

    ``ValueError`` for an unknown name (the message lists the registered names) and for a
    precision the method refuses."""
    return method_class(name)(model, precision=precision, **options)
