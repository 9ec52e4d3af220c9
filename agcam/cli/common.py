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
from agcam.precision import DEFAULT_PRECISION, PRECISIONS
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


def add_precision_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--precision", default=DEFAULT_PRECISION, choices=PRECISIONS,
                        help="fp32: exact, the released numbers (default); tf32: TF32 matrix "
                             "products on CUDA; bf16: bfloat16 autocast, float32 maps (LRP "
                             "refuses it); see docs/gpu.md")


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
from agcam.registry import ordered_methods, paper_methods  # noqa: E402  (re-exported)


def add_method_arg(parser: argparse.ArgumentParser, help_suffix: str = "") -> None:
    parser.add_argument("--method", nargs="+", default=["agcam"], metavar="METHOD",
                        help=f"explanation method(s){help_suffix}: one or several of "
                             f"{', '.join(paper_methods())}, ... (every registered name), or "
                             "all (default: agcam)")


def resolve_methods(names: Union[str, Sequence[str]], precision: Optional[str] = None
                    ) -> List[str]:
    """``--method`` as given (a name, several, or ``all``) -> the method names, checked.

    A bad or repeated name is a :class:`UsageError` listing the available methods; with
    ``precision``, so is a method that refuses it (:func:`check_precision_arg`).
    """
    names = [names] if isinstance(names, str) else list(names)
    if "all" in names:
        if len(names) > 1:
            raise UsageError(f"--method {' '.join(names)}: all cannot be combined with names")
        return _check_precision(ordered_methods(), precision)
    for name in names:
        check_method(name)
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise UsageError(f"--method {' '.join(names)}: {', '.join(repeated)} given twice")
    return _check_precision(names, precision)


def _check_precision(methods: List[str], precision: Optional[str]) -> List[str]:
    if precision is not None:
        for method in methods:
            check_precision_arg(method, precision)
    return methods


#: at most this many loader processes by default (more rarely helps and costs memory)
MAX_DEFAULT_WORKERS = 16
DECODERS = ("pil", "gpu")


def default_num_workers() -> int:
    """The CPU cores this process may use (``os.sched_getaffinity``), shared among the processes
    of this machine under ``torchrun`` (``LOCAL_WORLD_SIZE``), at most 16, at least 1."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        cores = os.cpu_count() or 1
    local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
    return max(1, min(MAX_DEFAULT_WORKERS, cores // local))


def add_run_args(parser: argparse.ArgumentParser, batch_size: int = 16) -> None:
    """``--batch_size``, ``--num_workers``, ``--decode``, ``--precision``, ``--limit``,
    ``--seed``, ``--no_progress``."""
    parser.add_argument("--batch_size", type=int, default=batch_size,
                        help=f"images per forward/backward pass (default: {batch_size})")
    parser.add_argument("--num_workers", type=int, default=None,
                        help="loader processes decoding images; 0 decodes in the main process "
                             "(default: the CPU cores available, at most "
                             f"{MAX_DEFAULT_WORKERS})")
    parser.add_argument("--decode", default="pil", choices=DECODERS,
                        help="pil: the released PIL decode and resize, exact (default); gpu: "
                             "JPEGs decoded (nvJPEG) and resized (antialiased bilinear) on the "
                             "model's device, faster, not bit-identical (see docs/gpu.md)")
    add_precision_arg(parser)
    parser.add_argument("--limit", type=int, default=None,
                        help="only the first N images, by name")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")


def check_method(method: str) -> None:
    from agcam.registry import available_methods
    methods = available_methods()
    if method not in methods:
        raise UsageError(f"--method {method}: unknown method; choose from {', '.join(methods)} "
                         "or all")


def check_run_args(args: argparse.Namespace) -> None:
    """The flags of :func:`add_run_args` (and ``--method``, resolved into ``args.methods``),
    before anything heavy starts."""
    args.methods = resolve_methods(args.method, args.precision)
    if args.batch_size < 1:
        raise UsageError(f"--batch_size {args.batch_size}: must be at least 1")
    if args.num_workers is None:
        args.num_workers = default_num_workers()
    if args.num_workers < 0:
        raise UsageError(f"--num_workers {args.num_workers}: must be 0 or more")
    if args.limit is not None and args.limit < 1:
        raise UsageError(f"--limit {args.limit}: must be at least 1")


def add_dataset_args(parser: argparse.ArgumentParser, split: bool = True) -> None:
    """``--dataset`` and (with ``split``) ``--split``."""
    from agcam.datasets import DATASETS
    parser.add_argument("--dataset", default="ilsvrc",
                        help=f"data set: {', '.join(DATASETS)} (default: ilsvrc, the paper's "
                             "Table 1; voc and cub need a fine-tuned --checkpoint)")
    if split:
        parser.add_argument("--split", default=None,
                            help="split to evaluate (default: val for ilsvrc and voc, test for "
                                 "cub)")


def dataset_from_args(args: argparse.Namespace):
    """The :class:`agcam.datasets.DatasetSpec` that ``--dataset`` names (UsageError otherwise)."""
    from agcam.datasets import get_dataset
    return get_dataset(getattr(args, "dataset", "ilsvrc"))


def samples_from_args(args: argparse.Namespace, default_root: str):
    """The :class:`agcam.datasets.Listing` of ``--dataset``'s ``--split`` under ``--data_root``
    (for ILSVRC, default: the bundled set at ``default_root``); sets ``args.split``."""
    from agcam.datasets import list_split
    spec = dataset_from_args(args)
    if args.data_root is None:
        if spec.name != "ilsvrc":
            raise UsageError(f"--data_root not given: pass --data_root DIR, {spec.root_help}")
        if not os.path.isdir(default_root):
            raise UsageError(f"--data_root not given and the bundled sample set {default_root} "
                             "is not there; pass --data_root DIR, the ILSVRC root holding "
                             "Data/CLS-LOC/val and Annotations/CLS-LOC/val")
        args.data_root = default_root
    listing = list_split(spec, args.data_root, args.split, limit=args.limit)
    args.split = listing.split
    return listing


def check_head(model, spec, args: argparse.Namespace) -> None:
    """The model's head must have one output per class of the data set."""
    classes = getattr(model, "num_classes", None)
    if classes == spec.num_classes:
        return
    source = f"--checkpoint {args.checkpoint}" if args.checkpoint else f"--model {args.model}"
    hint = "" if spec.train_split is None else \
        f"; fine-tune one with: python -m agcam finetune --dataset {spec.name}"
    raise UsageError(f"{source}: the model's head has {classes} classes, --dataset {spec.name} "
                     f"has {spec.num_classes}{hint}")


def start_run(args: argparse.Namespace, spec=None):
    """The common start of a data script: process group (under torchrun; one process otherwise),
    arguments printed by rank 0, seed, model (its head checked against the data set ``spec``
    when given). Returns ``(ctx, model)``; the caller ends with
    ``agcam.distributed.cleanup(ctx)``."""
    from agcam import distributed
    ctx = distributed.init_distributed(resolve_device(args.device))
    try:
        if ctx.is_main:
            print_args(args)
        seed_everything(args.seed)
        model = model_from_args(args, ctx.device)
        if spec is not None:
            check_head(model, spec, args)
    except BaseException:
        distributed.cleanup(ctx)
        raise
    return ctx, model
