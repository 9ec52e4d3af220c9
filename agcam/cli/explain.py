"""``agcam explain IMAGE [IMAGE ...]``: explain your own images.

For every image: prints the top-5 predicted classes, then writes one PNG per method to ``--out``
(``<image stem>_<method>.png``, 1200 x 400 px): the image, the heatmap of the top-1 class (or of
``--target``) overlaid on it, and the boxes the heatmap gives at ``--threshold``. ``--target``
explains that class instead of the predicted one (Rollout has one map whatever the class).

Exit codes: 0 when every image was explained; 1 when some could not be read or written (each is
reported on stderr as it happens and the others are still processed); 2 for a usage error (a bad
flag, an unknown model, weights that cannot be obtained), reported in one line.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Dict, List, Sequence

from agcam.cli.common import (
    UsageError,
    add_batch_size_arg,
    add_method_arg,
    add_model_args,
    add_out_arg,
    add_precision_arg,
    check_at_least,
    check_out_dir,
    model_from_args,
    print_args,
    report_pngs,
    resolve_device,
    resolve_methods,
    typed,
)


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files to explain")
    add_method_arg(parser)
    parser.add_argument("--target", default=None, metavar="CLASS",
                        help="class to explain instead of the predicted one: an index (281), a "
                             "wnid (n02123045) or an ImageNet name (tabby)")
    parser.add_argument("--text", nargs="+", default=None, metavar="PROMPT",
                        help="explain text prompts with an image-text model (--model hf:<CLIP "
                             "repo>, open_clip:<arch>/<pretrained>, clip_agcam_learnt): one PNG "
                             "per prompt and method, titled with the prompt and its probability")
    add_out_arg(parser, "a folder for the PNG files", default="explanations")
    parser.add_argument("--threshold", type=float, default=0.5,
                        help="heatmap threshold of the boxes, in [0, 1] (default: 0.5)")
    add_model_args(parser)
    add_batch_size_arg(parser, 8)
    add_precision_arg(parser)
    return parser


def get_args_parser() -> argparse.ArgumentParser:
    return add_arguments(argparse.ArgumentParser(
        prog="agcam explain", description=__doc__.splitlines()[0].replace("``", "")))


def output_names(paths: Sequence[str]) -> List[str]:
    """One output stem per input: the file stem, made unique (``a/x.jpg``, ``b/x.jpg`` ->
    ``x``, ``x_2``) so that no PNG overwrites another."""
    seen: Dict[str, int] = {}
    names = []
    for path in paths:
        stem = os.path.splitext(os.path.basename(path))[0] or "image"
        seen[stem] = seen.get(stem, 0) + 1
        names.append(stem if seen[stem] == 1 else f"{stem}_{seen[stem]}")
    return names


def format_top(path: str, top, num_classes: int, names=None) -> str:
    """The top-k lines of one image; ``names``: the model's own class names (``id2label``)."""
    from agcam.figures.heatmaps import class_name
    lines = [path]
    for rank, (index, prob) in enumerate(top, start=1):
        lines.append(f"  {rank}. {class_name(index, num_classes, names)} ({index})  {prob:.1%}")
    return "\n".join(lines)


def _target(text: str, num_classes: int, names=None) -> int:
    from agcam.figures.heatmaps import parse_class
    try:
        return parse_class(text, num_classes, names)
    except ValueError as exc:
        raise UsageError(f"--target {exc}") from None


def main(args: argparse.Namespace) -> int:
    print_args(args)
    check_at_least(args, "batch_size")
    if not 0.0 <= args.threshold <= 1.0:
        raise UsageError(f"--threshold {args.threshold}: must be in [0, 1]")
    if getattr(args, "text", None):
        from agcam.cli.explain_text import explain_prompts
        return explain_prompts(args, output_names(list(args.images)))
    methods = resolve_methods(args.method, args.precision, typed(args, "method"))
    import torch
    from tqdm import tqdm

    from agcam.figures.heatmaps import class_names_of, explain_heatmaps, num_classes_of, top_k
    from agcam.figures.plotting import explanation_figure, save_figure
    from agcam.precision import precision
    from agcam.registry import get_explainer
    from models.vit import build_transform, load_image

    if args.target is not None and not args.target.strip().isdigit() and \
            args.checkpoint is None and not args.model.startswith("hf:"):
        # a misspelt ImageNet name fails before the model is downloaded (a checkpoint or a
        # Hugging Face model may name its classes itself)
        _target(args.target, 1000)
    model = model_from_args(args, resolve_device(args.device))
    num_classes = num_classes_of(model)
    class_names = class_names_of(model)
    target = None if args.target is None else _target(args.target, num_classes, class_names)
    explainers = {m: get_explainer(m, model, precision=args.precision) for m in methods}
    transform = build_transform(model)
    check_out_dir(args)

    paths = list(args.images)
    names = output_names(paths)
    failed: List[str] = []
    written = 0

    def report(path: str, problem: str) -> None:
        failed.append(path)
        tqdm.write(f"error: {path}: {problem}", file=sys.stderr)

    with tqdm(total=len(paths), unit="image", disable=len(paths) < 2, file=sys.stderr) as bar:
        for start in range(0, len(paths), args.batch_size):
            batch = []
            for path, name in zip(paths[start:start + args.batch_size],
                                  names[start:start + args.batch_size]):
                try:
                    batch.append((path, name, load_image(path)))
                except Exception as exc:  # missing, not an image, truncated, too large, ...
                    report(path, f"cannot read the image ({type(exc).__name__}: {exc})")
                    bar.update(1)
            if not batch:
                continue
            images = torch.stack([transform(image) for _, _, image in batch])
            with precision(args.precision, next(model.parameters()).device.type):
                tops = top_k(model, images)      # the class the maps explain, at their precision
            heatmaps = {m: explain_heatmaps(explainers[m], images, target)[1] for m in methods}
            for i, (path, name, image) in enumerate(batch):
                tqdm.write(format_top(path, tops[i], num_classes, class_names))
                explained = target if target is not None else tops[i][0][0]
                try:
                    for method in methods:
                        fig = explanation_figure(
                            image, heatmaps[method][i], method, explained, args.threshold,
                            top=tops[i], title=os.path.basename(path), num_classes=num_classes,
                            class_names=class_names)
                        save_figure(fig, os.path.join(args.out, f"{name}_{method}.png"))
                        written += 1
                except OSError as exc:
                    report(path, f"cannot write its PNG to {args.out} ({exc})")
                bar.update(1)

    return report_pngs(written, args.out, failed, len(paths))
