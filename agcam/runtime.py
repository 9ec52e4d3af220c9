"""What a run starts with, below the command line: the device, the model the flags name, the
methods ``--method`` names (checked against the registry and the precision), the seed, the
arguments printed. Library code that runs a job (``agcam.train``, the runner) uses these
without importing the command-line package; :mod:`agcam.cli.common` hands them on to the scripts.

torch and the models are imported inside the functions: a parser that imports this module stays
light.
"""
from __future__ import annotations

import argparse
import random
from typing import List, Optional, Sequence, Union

from agcam.errors import UsageError


def typed(args: argparse.Namespace, dest: str) -> str:
    """The name the user typed for the flag stored in ``dest`` (``--save_root`` rather than
    ``--out``; recorded by the parser, :mod:`agcam.cli.common`), else its canonical name."""
    return (getattr(args, "_typed", None) or {}).get(dest) or f"--{dest}"


def resolve_device(name: Optional[str]):
    """The ``torch.device`` that ``--device`` names (default: cuda when available, else cpu)."""
    import torch
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"--device {name}: not a device (use cpu or cuda)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: CUDA is not available on this machine")
    return device


def model_from_args(args: argparse.Namespace, device=None):
    """Create the model the flags name; ``ModelError`` becomes a ``UsageError``."""
    from models.vit import ModelError, create_model
    device = device if device is not None else resolve_device(getattr(args, "device", None))
    try:
        return create_model(args.model, checkpoint=args.checkpoint, device=device)
    except ModelError as exc:
        raise UsageError(str(exc)) from None


def seed_everything(seed: int) -> None:
    """One place that fixes every random generator the scripts touch."""
    import numpy as np
    import torch
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def print_args(args: argparse.Namespace) -> None:
    """The arguments, ``name=value`` sorted by name (not the parser's bookkeeping: names that
    start with ``_``, and functions)."""
    print(" ".join(f"{k}={v}" for k, v in sorted(vars(args).items())
                   if not k.startswith("_") and not callable(v)), flush=True)


def check_precision_arg(method: str, precision: str) -> None:
    """The method's refusal of ``--precision`` (LRP at bf16) as a usage error, before any work."""
    from agcam.registry import REGISTRY, load_methods
    load_methods()
    cls = REGISTRY.get(method)
    if cls is not None:
        try:
            cls.check_supported(precision)
        except ValueError as exc:
            raise UsageError(f"--precision {precision}: {exc}") from None


def resolve_methods(names: Union[str, Sequence[str]], precision: Optional[str] = None,
                    flag: str = "--method") -> List[str]:
    """``--method`` as given (a name, several, or ``all``) -> the method names, checked.

    A bad or repeated name is a :class:`UsageError` listing the available methods; with
    ``precision``, so is a method that refuses it (:func:`check_precision_arg`). ``flag``: the
    name the user typed (:func:`typed`).
    """
    from agcam.registry import ordered_methods
    names = [names] if isinstance(names, str) else list(names)
    if "all" in names:
        if len(names) > 1:
            raise UsageError(f"{flag} {' '.join(names)}: all cannot be combined with names")
        return _check_precision(ordered_methods(), precision)
    for name in names:
        check_method(name, flag)
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise UsageError(f"{flag} {' '.join(names)}: {', '.join(repeated)} given twice")
    return _check_precision(names, precision)


def _check_precision(methods: List[str], precision: Optional[str]) -> List[str]:
    if precision is not None:
        for method in methods:
            check_precision_arg(method, precision)
    return methods


def check_method(method: str, flag: str = "--method") -> None:
    from agcam.registry import available_methods
    methods = available_methods()
    if method not in methods:
        raise UsageError(f"{flag} {method}: unknown method; choose from {', '.join(methods)} "
                         "or all")
