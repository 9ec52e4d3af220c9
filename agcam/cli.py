"""What every top-level script shares: model/device flags, clean exits on bad input, seeding.

Scripts (``localization.py``, ``save_h5.py``, ``ABPC.py``, ``python -m agcam explain``) only parse
arguments and call the library. A user error becomes one line on stderr and exit code 2, never a
traceback from deep inside.
"""
from __future__ import annotations

import argparse
import functools
import random
import sys
from typing import Callable, Optional

import numpy as np
import torch

from models.vit import DEFAULT_MODEL, ModelError, create_model

EXIT_USAGE = 2


class UsageError(Exception):
    """Bad input from the user (a flag, a file, a data set): reported in one line, exit code 2."""


def str2bool(value) -> bool:
    """``--csv True`` / ``--csv=False`` as the released scripts take them."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "y", "t"):
        return True
    if text in ("false", "0", "no", "n", "f"):
        return False
    raise argparse.ArgumentTypeError(f"expected True or False, got {value!r}")


def add_model_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``--model``, ``--checkpoint``, ``--device``: shared by every script."""
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help="timm model name (default: the paper's weights, "
                             f"{DEFAULT_MODEL})")
    parser.add_argument("--checkpoint", default=None,
                        help="local weights (.pth state dict or .safetensors) instead of the hub")
    parser.add_argument("--device", default=None,
                        help="cuda or cpu (default: cuda when available, else cpu)")
    return parser


def resolve_device(name: Optional[str]) -> torch.device:
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"--device {name}: not a device (use cpu or cuda)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: CUDA is not available on this machine")
    return device


def model_from_args(args: argparse.Namespace, device: Optional[torch.device] = None):
    """Create the model the flags name; ``ModelError`` becomes a ``UsageError``."""
    device = device if device is not None else resolve_device(getattr(args, "device", None))
    try:
        return create_model(args.model, checkpoint=args.checkpoint, device=device)
    except ModelError as exc:
        raise UsageError(str(exc)) from None


def seed_everything(seed: int) -> None:
    """One place that fixes every random generator the scripts touch."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def print_args(args: argparse.Namespace) -> None:
    print(" ".join(f"{k}={v}" for k, v in sorted(vars(args).items())), flush=True)


def run_main(main: Callable[[argparse.Namespace], Optional[int]],
             args: argparse.Namespace) -> int:
    """Run a script's ``main``: user errors print one clear line and return exit code 2."""
    try:
        code = main(args)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr, flush=True)
        return 130
    return int(code or 0)


def script_entry(get_args_parser: Callable[[], argparse.ArgumentParser],
                 main: Callable[[argparse.Namespace], Optional[int]]) -> Callable[..., int]:
    """``sys.exit(script_entry(get_args_parser, main)())`` for a top-level script."""
    @functools.wraps(main)
    def entry(argv=None) -> int:
        args = get_args_parser().parse_args(argv)
        return run_main(main, args)
    return entry
