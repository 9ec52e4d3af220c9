"""What every top-level script shares: model/device flags, clean exits on bad input, seeding.

Scripts (``localization.py``, ``save_h5.py``, ``ABPC.py``, ``python -m agcam explain``) only parse
arguments and call the library. A user error becomes one line on stderr and exit code 2, never a
traceback from deep inside.
"""
from __future__ import annotations

import argparse
import functools
import os
import random
import sys
from typing import Callable, List, Optional, Sequence, Union

import numpy as np
import torch

from agcam.errors import EXIT_USAGE, UsageError
from models.vit import DEFAULT_MODEL, ModelError, create_model



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


# -- what the data scripts (localization.py, save_h5.py) share -----------------------------------
#: the methods of the paper's scripts (registered in agcam.method and baselines/)
PAPER_METHODS = ("agcam", "lrp", "rollout")


def add_method_arg(parser: argparse.ArgumentParser, help_suffix: str = "") -> None:
    parser.add_argument("--method", nargs="+", default=["agcam"], metavar="METHOD",
                        help=f"explanation method(s){help_suffix}: one or several of "
                             f"{', '.join(PAPER_METHODS)}, ... (every registered name), or "
                             "all (default: agcam)")


def ordered_methods() -> List[str]:
    """Every registered method, the paper's three first (the order of ``--method all``)."""
    from agcam.registry import available_methods
    methods = available_methods()
    return [m for m in PAPER_METHODS if m in methods] + \
        [m for m in methods if m not in PAPER_METHODS]


def resolve_methods(names: Union[str, Sequence[str]]) -> List[str]:
    """``--method`` as given (a name, several, or ``all``) -> the method names, checked.

    A bad or repeated name is a :class:`UsageError` listing the available methods.
    """
    names = [names] if isinstance(names, str) else list(names)
    if "all" in names:
        if len(names) > 1:
            raise UsageError(f"--method {' '.join(names)}: all cannot be combined with names")
        return ordered_methods()
    for name in names:
        check_method(name)
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise UsageError(f"--method {' '.join(names)}: {', '.join(repeated)} given twice")
    return names


def add_run_args(parser: argparse.ArgumentParser, batch_size: int = 16) -> None:
    """``--batch_size``, ``--num_workers``, ``--limit``, ``--seed``, ``--no_progress``."""
    parser.add_argument("--batch_size", type=int, default=batch_size,
                        help=f"images per forward/backward pass (default: {batch_size})")
    parser.add_argument("--num_workers", type=int, default=2,
                        help="loader processes decoding images; 0 decodes in the main process "
                             "(default: 2)")
    parser.add_argument("--limit", type=int, default=None,
                        help="only the first N images, by name")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")


def check_method(method: str) -> None:
    from agcam.registry import available_methods
    methods = available_methods()
    if method not in methods:
        known = ", ".join(sorted(set(methods) | set(PAPER_METHODS)))
        missing = "" if method not in PAPER_METHODS else " (its implementation is not installed)"
        raise UsageError(f"--method {method}: unknown method{missing}; choose from {known} "
                         "or all")


def check_run_args(args: argparse.Namespace) -> None:
    """The flags of :func:`add_run_args` (and ``--method``, resolved into ``args.methods``),
    before anything heavy starts."""
    args.methods = resolve_methods(args.method)
    if args.batch_size < 1:
        raise UsageError(f"--batch_size {args.batch_size}: must be at least 1")
    if args.num_workers < 0:
        raise UsageError(f"--num_workers {args.num_workers}: must be 0 or more")
    if args.limit is not None and args.limit < 1:
        raise UsageError(f"--limit {args.limit}: must be at least 1")


def samples_from_args(args: argparse.Namespace, default_root: str):
    """The samples under ``--data_root`` (default: the bundled set at ``default_root``)."""
    from agcam.data import find_samples
    if args.data_root is None:
        if not os.path.isdir(default_root):
            raise UsageError(f"--data_root not given and the bundled sample set {default_root} "
                             "is not there; pass --data_root DIR, the ILSVRC root holding "
                             "Data/CLS-LOC/val and Annotations/CLS-LOC/val")
        args.data_root = default_root
    return find_samples(args.data_root, limit=args.limit)


def start_run(args: argparse.Namespace):
    """The common start of a data script: process group (under torchrun; one process otherwise),
    arguments printed by rank 0, seed, model. Returns ``(ctx, model)``; the caller ends with
    ``agcam.distributed.cleanup(ctx)``."""
    from agcam import distributed
    ctx = distributed.init_distributed(resolve_device(args.device))
    try:
        if ctx.is_main:
            print_args(args)
        seed_everything(args.seed)
        model = model_from_args(args, ctx.device)
    except BaseException:
        distributed.cleanup(ctx)
        raise
    return ctx, model
