"""What every top-level script shares: model/device flags, clean exits on bad input, seeding.

Scripts (``localization.py``, ``save_h5.py``, ``ABPC.py``, ``python -m agcam explain``) only parse
arguments and call the library. A user error becomes one line on stderr and exit code 2, never a
traceback from deep inside.
"""
from __future__ import annotations

import argparse
import functools
import os
import re
import sys
from typing import Callable, List, Optional, Sequence

from agcam.errors import EXIT_USAGE, UsageError
from agcam.precision import DEFAULT_PRECISION, PRECISIONS
from agcam.runtime import (  # noqa: F401  (re-exported: the scripts import them from here)
    check_method,
    check_precision_arg,
    model_from_args,
    print_args,
    resolve_device,
    resolve_methods,
    seed_everything,
    typed,
)

# Nothing heavy is imported at the top of this module (torch, numpy, the models, the data sets):
# every parser is built, and ``--help`` or a usage error answered, before any of them loads
# (tests/test_cli.py checks it). The names the parsers show are therefore kept here, each checked
# against its source by a test:
#: the paper's weights, ``models.vit.DEFAULT_MODEL``
DEFAULT_MODEL = "vit_base_patch16_224.orig_in21k_ft_in1k"
#: the data sets of the image scripts, ``agcam.datasets.DATASETS``
DATASET_NAMES = ("ilsvrc", "voc", "cub", "synthetic")
#: the methods of the paper's tables, ``agcam.registry.paper_methods()`` (the help's examples)
PAPER_METHODS = ("agcam", "lrp", "rollout")


_ROLE = re.compile(r":[a-z]+:`~?([^`]+)`")     # :mod:`agcam.store`, :func:`~x.y`


def plain_text(text: Optional[str]) -> str:
    """A docstring as help text: without reST markup (``code`` -> code, :mod:`x` -> x)."""
    return _ROLE.sub(r"\1", text or "").replace("``", "")


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


# -- the one vocabulary of flags -------------------------------------------------------------
# Every parser adds these flags through the helpers below, so that a flag of one name has one
# meaning, type and help everywhere (tests/test_cli.py walks every parser). Where a flag has
# other names (the paper's ``--save_root``, ``--output``, bench's ``--methods``), they are aliases
# of the same flag; an error names the one the user typed (:func:`typed`).

class _Typed(argparse.Action):
    """Store the value and remember which of the flag's names the user typed."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        typed_names = dict(getattr(namespace, "_typed", None) or {})
        typed_names[self.dest] = option_string
        namespace._typed = typed_names


def _default_text(default) -> str:
    if isinstance(default, (list, tuple)):
        return " ".join(map(str, default))
    return str(default)


def add_method_arg(parser: argparse.ArgumentParser, default: Sequence[str] = ("agcam",)) -> None:
    """``--method NAME [NAME ...]`` (alias ``--methods``): one or several registered methods,
    or ``all``; resolved by :func:`resolve_methods`."""
    parser.add_argument("--method", "--methods", nargs="+", default=list(default),
                        metavar="METHOD", action=_Typed,
                        help=f"explanation method(s): one or several of "
                             f"{', '.join(PAPER_METHODS)}, ... (every registered name; "
                             f"docs/methods.md), or all (default: {_default_text(default)})")


def add_out_arg(parser: argparse.ArgumentParser, what: str, default: Optional[str] = None,
                aliases: Sequence[str] = (), required: bool = False, metavar: str = "DIR",
                default_text: Optional[str] = None) -> None:
    """``--out PATH``: where the command writes (``what``); ``aliases``: the names a script had
    before (``--output``, ``--save_root``)."""
    shown = default_text or (default if default is not None else "none")
    suffix = "required" if required else f"default: {shown}"
    parser.add_argument("--out", *aliases, default=default, required=required, metavar=metavar,
                        action=_Typed, help=f"where the output goes: {what} ({suffix})")


def add_prompts_arg(parser: argparse.ArgumentParser) -> None:
    """``--prompts FILE``: explain the zero-shot classifier of an image-text ``--model``."""
    parser.add_argument("--prompts", default=None, metavar="FILE",
                        help="one text prompt per class of the data set, one a line, or "
                             "'classnames' ('classnames:TEMPLATE') for the data set's class "
                             "names in 'a photo of a {}.' (in TEMPLATE): the model is then the "
                             "zero-shot classifier of the image-text --model (CLIP: hf:..., "
                             "open_clip:..., clip_agcam_learnt) on them (default: none, --model "
                             "is a classifier)")


def add_training_args(parser: argparse.ArgumentParser, model: str, steps: int, batch_size: int,
                      pair_fraction: float, workers: int = 1) -> None:
    """The flags of the from-scratch trainings (``train-learnt``, ``train-clip``): the recipe's
    own steps, batch size, share of two-object images and data workers as defaults."""
    parser.add_argument("--steps", type=int, default=steps,
                        help=f"optimiser steps (default: {steps})")
    add_batch_size_arg(parser, batch_size)
    parser.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (default: 1e-3)")
    parser.add_argument("--warmup", type=int, default=50, help="warm-up steps (default: 50)")
    parser.add_argument("--weight_decay", type=float, default=0.05,
                        help="weight decay (default: 0.05)")
    parser.add_argument("--pair_fraction", type=float, default=pair_fraction,
                        help=f"share of training images with two objects (default: "
                             f"{pair_fraction})")
    add_seed_arg(parser)
    add_threads_arg(parser, default=1)
    parser.add_argument("--workers", type=int, default=workers,
                        help=f"data-loader worker processes drawing the images (default: "
                             f"{workers})")
    parser.add_argument("--log_every", type=int, default=50,
                        help="steps between two log lines (default: 50)")
    add_out_arg(parser, "the weights file (.safetensors); the log goes beside it as .json",
                metavar="FILE", default_text=f"the committed models/weights/{model}.safetensors")
    parser.add_argument("--heldout", default=None,
                        help="the held-out set to report the accuracy on (default: "
                             "samples/synthetic/ILSVRC)")
    parser.add_argument("--fresh_images", type=int, default=1000,
                        help="fresh single-object images to report the accuracy on "
                             "(default: 1000)")


def check_training_args(args: argparse.Namespace, weights: str) -> None:
    """The checks of :func:`add_training_args`' flags; ``--out`` defaults to the committed
    ``weights``, ``--heldout`` to the committed synthetic set."""
    check_at_least(args, "steps", "batch_size", "threads")
    check_at_least(args, "workers", "warmup", "fresh_images", minimum=0)
    from agcam.train.learnt import HELDOUT_ROOT
    args.out = args.out or weights
    args.heldout = args.heldout or HELDOUT_ROOT


def add_limit_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--limit", type=int, default=None, metavar="N",
                        help="only the first N images, in name order (default: every image)")


def add_dataset_arg(parser: argparse.ArgumentParser, names: Sequence[str] = DATASET_NAMES,
                    default: Optional[str] = "ilsvrc", default_text: Optional[str] = None
                    ) -> None:
    """``--dataset NAME``, one of ``names`` (checked by the data set code, which names them)."""
    parser.add_argument("--dataset", default=default, metavar="NAME",
                        help=f"data set: {', '.join(names)} (default: "
                             f"{default_text or default})")


def add_device_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default=None,
                        help="cuda, cuda:N or cpu (default: cuda when available, else cpu)")


def add_precision_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--precision", default=DEFAULT_PRECISION, choices=PRECISIONS,
                        help="fp32: exact, the released numbers; tf32: TF32 matrix "
                             "products on CUDA; bf16: bfloat16 autocast, float32 maps (LRP "
                             f"refuses it); see docs/gpu.md (default: {DEFAULT_PRECISION})")


def add_batch_size_arg(parser: argparse.ArgumentParser, default: int) -> None:
    parser.add_argument("--batch_size", type=int, default=default,
                        help=f"images per forward pass (default: {default})")


def add_maxboxacc_step_arg(parser: argparse.ArgumentParser) -> None:
    """MaxBoxAcc's threshold step (checked against ``agcam.evaluation.wsol``'s steps)."""
    parser.add_argument("--maxboxacc_step", type=float, default=0.01,
                        help="threshold step of MaxBoxAcc: 0.01 or 0.001 (default: 0.01)")


def add_perturbation_args(parser: argparse.ArgumentParser) -> None:
    """``--auc`` (Chefer's AUC convention) and ``--rise_step`` (RISE's step)."""
    from agcam.evaluation.names import CHEFER_AUC
    parser.add_argument("--auc", default=CHEFER_AUC[0], choices=CHEFER_AUC,
                        help="AUC convention of Chefer's tests: sklearn_0_1, the curve over "
                             "[0, 0.1, ..., 0.9, 1] with y = [clean, ..., 0] (Beyond "
                             "Intuition's sklearn.metrics.auc); trapezoid_0.1_0.9, over the "
                             f"nine steps alone (default: {CHEFER_AUC[0]})")
    parser.add_argument("--rise_step", type=int, default=None,
                        help="pixels changed per insertion/deletion step (default: eight image "
                             "rows, RISE's 224 * 8 for 224-pixel inputs)")


def add_repeats_arg(parser: argparse.ArgumentParser, default: int) -> None:
    """A benchmark's ``--repeats``: the median of that many turns is reported."""
    parser.add_argument("--repeats", type=int, default=default,
                        help=f"turns of each case; the median is reported (default: {default})")


def add_images_arg(parser: argparse.ArgumentParser, default: int) -> None:
    """A benchmark's ``--images``: how many images it times."""
    parser.add_argument("--images", type=int, default=default,
                        help=f"images timed (default: {default})")


def add_seed_arg(parser: argparse.ArgumentParser, default: int = 0) -> None:
    parser.add_argument("--seed", type=int, default=default,
                        help=f"random seed (default: {default})")


def add_progress_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")


def add_threads_arg(parser: argparse.ArgumentParser, default: Optional[int] = None) -> None:
    parser.add_argument("--threads", type=int, default=default,
                        help="torch CPU threads (default: "
                             f"{default if default is not None else 'torch decides'})")


def add_model_args(parser: argparse.ArgumentParser, default: str = DEFAULT_MODEL,
                   default_text: str = f"the paper's weights, {DEFAULT_MODEL}",
                   checkpoint: bool = True) -> argparse.ArgumentParser:
    """``--model``, ``--checkpoint`` (unless not ``checkpoint``), ``--device``: shared by every
    script."""
    parser.add_argument("--model", default=default,
                        help=f"timm model name, or hf:<repo id> (default: {default_text})")
    if checkpoint:
        parser.add_argument("--checkpoint", default=None,
                            help="local weights instead of the hub: a .pth state dict, "
                                 ".safetensors, or a transformers checkpoint folder "
                                 "(default: none)")
    add_device_arg(parser)
    return parser


#: the exit code of a run stopped by Ctrl-C (128 + SIGINT, as a shell reports it)
EXIT_INTERRUPTED = 130
#: the exit code of a command that wrote what it could but failed on some inputs
EXIT_SOME_FAILED = 1


def report_pngs(written: int, out: str, failed: Sequence[str], total: int) -> int:
    """The last lines of a command writing PNGs per image (``agcam explain``, with or without
    ``--text``): how many were written where, and the images that failed; the exit code."""
    print(f"wrote {written} PNG file(s) to {out}", flush=True)
    if failed:
        print(f"{len(failed)} of {total} image(s) failed: {', '.join(failed)}",
              file=sys.stderr, flush=True)
        return EXIT_SOME_FAILED
    return 0


def run_main(main: Callable[[argparse.Namespace], Optional[int]],
             args: argparse.Namespace,
             on_interrupt: Optional[Callable[[argparse.Namespace], str]] = None) -> int:
    """Run a script's ``main``: user errors print one clear line and return exit code 2; Ctrl-C
    prints what was kept (``on_interrupt(args)``: a line saying so, e.g. how many images are
    stored and that the same command resumes) and returns 130."""
    try:
        code = main(args)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return EXIT_USAGE
    except KeyboardInterrupt:
        message = "stopped before the end (Ctrl-C)"
        if on_interrupt is not None:
            try:
                message = on_interrupt(args)
            except Exception as exc:  # the report must not hide the interruption
                message = f"what was kept could not be read ({type(exc).__name__}: {exc})"
        print(f"interrupted: {message}", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    return int(code or 0)


def script_entry(get_args_parser: Callable[[], argparse.ArgumentParser],
                 main: Callable[[argparse.Namespace], Optional[int]],
                 on_interrupt: Optional[Callable[[argparse.Namespace], str]] = None
                 ) -> Callable[..., int]:
    """``sys.exit(script_entry(get_args_parser, main)())`` for a top-level script
    (``on_interrupt``: see :func:`run_main`)."""
    @functools.wraps(main)
    def entry(argv=None) -> int:
        args = get_args_parser().parse_args(argv)
        return run_main(main, args, on_interrupt)
    return entry


# -- what the data scripts (localization.py, save_h5.py) share -----------------------------------

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


def add_data_run_args(parser: argparse.ArgumentParser) -> None:
    """What every data script and ``agcam evaluate`` take: the model (:func:`add_model_args`),
    ``--prompts`` and the run's flags (:func:`add_run_args`)."""
    add_model_args(parser)
    add_prompts_arg(parser)
    add_run_args(parser)


def add_run_args(parser: argparse.ArgumentParser, batch_size: int = 16) -> None:
    """``--batch_size``, ``--num_workers``, ``--decode``, ``--precision``, ``--limit``,
    ``--seed``, ``--no_progress``."""
    add_batch_size_arg(parser, batch_size)
    add_workers_arg(parser)
    parser.add_argument("--decode", default="pil", choices=DECODERS,
                        help="pil: the released PIL decode and resize, exact; gpu: "
                             "JPEGs decoded (nvJPEG) and resized (antialiased bilinear) on the "
                             "model's device, faster, not bit-identical (see docs/gpu.md) "
                             "(default: pil)")
    add_precision_arg(parser)
    add_limit_arg(parser)
    add_seed_arg(parser)
    add_progress_arg(parser)


def add_workers_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--num_workers", type=int, default=None,
                        help="loader processes decoding images; 0 decodes in the main process "
                             "(default: the CPU cores available, at most "
                             f"{MAX_DEFAULT_WORKERS})")


def check_at_least(args: argparse.Namespace, *dests: str, minimum: int = 1) -> None:
    """Each integer flag of ``dests`` that is set must be at least ``minimum``."""
    for dest in dests:
        value = getattr(args, dest)
        if value is not None and value < minimum:
            raise UsageError(f"{typed(args, dest)} {value}: must be at least {minimum}")


def check_run_args(args: argparse.Namespace) -> None:
    """The flags of :func:`add_run_args` (and ``--method``, resolved into ``args.methods``),
    before anything heavy starts."""
    args.methods = resolve_methods(args.method, args.precision, typed(args, "method"))
    check_at_least(args, "batch_size", "limit")
    if args.num_workers is None:
        args.num_workers = default_num_workers()
    check_at_least(args, "num_workers", minimum=0)


def check_out_dir(args: argparse.Namespace) -> None:
    """``--out`` (when given) is a folder, created if missing."""
    if args.out is None:
        return
    flag = typed(args, "out")
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise UsageError(f"{flag} {args.out}: exists and is not a directory")
    try:
        os.makedirs(args.out, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"{flag} {args.out}: cannot be created ({exc.strerror})") from None


def add_dataset_args(parser: argparse.ArgumentParser, split: bool = True) -> None:
    """``--dataset`` and (with ``split``) ``--split``."""
    add_dataset_arg(parser, default_text="ilsvrc, the paper's Table 1; voc and cub need a "
                                         "fine-tuned --checkpoint")
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


def class_name_prompts(value: str, dataset: str, data_root: Optional[str] = None,
                       split: Optional[str] = None, flag: str = "--prompts") -> List[str]:
    """``classnames[:TEMPLATE]``: the template (checked first) filled with each class name of
    ``dataset`` (:func:`agcam.datasets.class_names`; ``imagenet_seg``: ImageNet's), class ``i``
    the ``i``-th prompt."""
    from agcam.clip import name_template
    template = name_template(value, dataset, flag)
    from agcam.datasets import class_names
    return [template.format(name) for name in class_names(dataset, data_root, split)]


def start_run(args: argparse.Namespace, spec=None):
    """The common start of a data script: process group (under torchrun; one process otherwise),
    arguments printed by rank 0, seed, model (its head checked against the data set ``spec``
    when given). With ``--prompts FILE`` (where a command has it) the model is the zero-shot
    classifier of the image-text model ``--model`` on those prompts, one per class
    (:func:`agcam.clip.prompt_classifier`). Returns ``(ctx, model)``; the caller ends with
    ``agcam.distributed.cleanup(ctx)``."""
    from agcam import distributed
    prompts = None
    if getattr(args, "prompts", None) is not None:   # checked before any heavy start
        from agcam.clip import is_class_names, load_prompts
        if is_class_names(args.prompts):
            prompts = class_name_prompts(args.prompts, args.dataset, args.data_root,
                                         getattr(args, "split", None))
        else:
            prompts = load_prompts(args.prompts, spec.num_classes if spec is not None else None)
    ctx = distributed.init_distributed(resolve_device(args.device))
    try:
        if ctx.is_main:
            print_args(args)
        seed_everything(args.seed)
        if prompts is not None:
            from agcam.clip import prompt_classifier
            from models.vit import ModelError
            try:
                model = prompt_classifier(args.model, prompts, checkpoint=args.checkpoint,
                                          device=ctx.device)
            except ModelError as exc:
                raise UsageError(str(exc)) from None
        else:
            model = model_from_args(args, ctx.device)
        if spec is not None:
            check_head(model, spec, args)
    except BaseException:
        distributed.cleanup(ctx)
        raise
    return ctx, model
