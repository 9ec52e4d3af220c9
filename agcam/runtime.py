"""What a run starts with, below the command line: the device, the model the flags name, the
seed, the arguments printed. Library code that runs a job (``agcam.train``, the runner) uses these
without importing the command-line package; :mod:`agcam.cli.common` hands them on to the scripts.

torch and the models are imported inside the functions: a parser that imports this module stays
light.
"""
from __future__ import annotations

import argparse
import random
from typing import Optional

from agcam.errors import UsageError


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
