"""Figures of the learnt model: every method's map on held-out images, and class-specific maps.

    python -m agcam.figures.learnt          # writes docs/figures/learnt_methods.png,
                                            # learnt_two_objects.png and learnt_agcam_pairs.png

``learnt_methods.png``: a row per held-out image (default: the first image of classes 1, 2, 5
and 6, fixed before any map was looked at), the image with its ground-truth box (dashed red),
then each method's heatmap of the predicted class with the box it gives at 0.5 (green).
``learnt_two_objects.png``: one two-object image (default: the first to which the model gives
both classes a probability of at least :data:`PAIR_MIN_PROBABILITY`), a row per object class, a
column per method (:func:`agcam.figures.plotting.class_specific_figure`).
``learnt_agcam_pairs.png``: AGCAM's two class maps on every two-object image, failures
included. Drawn with :mod:`agcam.figures.plotting`; the model is ``vit_agcam_learnt`` with its
committed weights.
"""
from __future__ import annotations

import argparse
import io
import os
import sys
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from matplotlib.figure import Figure
from PIL import Image

from agcam.evaluation.learnt import HELDOUT_ROOT, PAIRS_ROOT, ROOT, load_heldout

FIGURES_DIR = os.path.join(ROOT, "docs", "figures")
#: the first held-out image of classes 1, 2, 5 and 6 (20 per class, written class by class)
DEFAULT_IMAGES = ("synth_00020", "synth_00040", "synth_00100", "synth_00120")
#: the all-methods two-object figure shows the first two-object image on which the model gives
#: both classes at least this probability (explaining a class it gives 1% says little)
PAIR_MIN_PROBABILITY = 0.2
PANEL = 1.6  # inches per panel


def _class_names(labels: Sequence[int]) -> List[str]:
    from agcam.datasets.synthetic import CLASSES
    return [CLASSES[i] if 0 <= i < len(CLASSES) else f"class {i}" for i in labels]


def methods_grid(images: Sequence[Image.Image], heatmaps: Dict[str, np.ndarray],
                 boxes: Sequence[Sequence], titles: Sequence[str], threshold: float = 0.5
                 ) -> Figure:
    """A row per image: the image (ground truth dashed red), then per method its heatmap with the
    boxes it gives at ``threshold`` (green). ``heatmaps[method]`` is ``[N, H, W]`` in [0, 1]."""
    from agcam.figures.plotting import (
        GT_COLOR,
        PRED_COLOR,
        draw_boxes,
        heatmap_boxes,
        overlay,
        show_image,
    )
    from agcam.registry import method_label
    methods = list(heatmaps)
    fig = Figure(figsize=(PANEL * (1 + len(methods)), (PANEL + 0.3) * len(images)), dpi=100,
                 layout="constrained")
    axes = fig.subplots(len(images), 1 + len(methods), squeeze=False)
    for row, image in enumerate(images):
        show_image(axes[row, 0], image, titles[row])
        draw_boxes(axes[row, 0], boxes[row], GT_COLOR, linestyle="--")
        for col, method in enumerate(methods, start=1):
            heatmap = heatmaps[method][row]
            overlay(axes[row, col], image, heatmap,
                    title=method_label(method) if row == 0 else None)
            draw_boxes(axes[row, col], heatmap_boxes(heatmap, image.size, threshold), PRED_COLOR,
                       linewidth=1.5)
    return fig


def pairs_grid(images: Sequence[Image.Image], heatmaps: Sequence[Sequence[np.ndarray]],
               boxes: Sequence[Sequence], names: Sequence[Sequence[str]], columns: int = 4
               ) -> Figure:
    """Every two-object image in ``columns`` groups of three panels: the image (both boxes), the
    map of its first object's class, the map of its second's (each with its own box)."""
    from agcam.figures.plotting import GT_COLOR, draw_boxes, overlay, show_image
    rows = (len(images) + columns - 1) // columns
    fig = Figure(figsize=(PANEL * 3 * columns, (PANEL + 0.3) * rows), dpi=100,
                 layout="constrained")
    axes = fig.subplots(rows, 3 * columns, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for k, image in enumerate(images):
        row, col = divmod(k, columns)
        show_image(axes[row, 3 * col], image, "image")
        draw_boxes(axes[row, 3 * col], boxes[k], GT_COLOR, linestyle="--", linewidth=1.5)
        for j in range(2):
            ax = axes[row, 3 * col + 1 + j]
            overlay(ax, image, heatmaps[k][j], title=f"for {names[k][j]}")
            draw_boxes(ax, [boxes[k][j]], GT_COLOR, linestyle="--", linewidth=1.5)
    return fig


def save_small_png(fig: Figure, path: str, colours: int = 96) -> int:
    """Save with :func:`agcam.figures.plotting.save_figure`, then store the PNG with a ``colours``
    palette (the figures are overlays of smooth maps: a palette keeps them legible at a fraction
    of the bytes). Returns the size in bytes."""
    from agcam.figures.plotting import save_figure
    buffer = io.BytesIO()
    save_figure(fig, buffer)
    with Image.open(io.BytesIO(buffer.getvalue())) as image:
        small = image.convert("RGB").quantize(colours, method=Image.Quantize.MEDIANCUT)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    small.save(path, format="PNG", optimize=True)
    return os.path.getsize(path)


def render(out_dir: str = FIGURES_DIR, names: Sequence[str] = DEFAULT_IMAGES,
           pair: Optional[str] = None, methods: Sequence[str] = (), model_name: str =
           "vit_agcam_learnt", checkpoint=None) -> List[str]:
    from agcam.figures.heatmaps import class_heatmaps, explain_heatmaps
    from agcam.figures.plotting import class_specific_figure
    from agcam.registry import get_explainer, ordered_methods
    from models.vit import create_model, load_image

    methods = list(methods) or ordered_methods()
    model = create_model(model_name, checkpoint=checkpoint)
    data = load_heldout(model, HELDOUT_ROOT)
    index = {name: i for i, name in enumerate(data.names)}
    missing = [n for n in names if n not in index]
    if missing:
        raise ValueError(f"not in the held-out set: {', '.join(missing)}")
    rows = [index[n] for n in names]
    images = [load_image(data.samples[i].path) for i in rows]
    inputs = data.images[rows]
    heatmaps, predictions = {}, None
    for method in methods:
        predictions, heatmaps[method] = explain_heatmaps(get_explainer(method, model), inputs)
    boxes = [data.samples[i].boxes for i in rows]  # in the images' own pixels, as drawn
    titles = [f"{_class_names([int(data.labels[i])])[0]}\npredicted: "
              f"{_class_names([int(p)])[0]}" for i, p in zip(rows, predictions)]
    written = []
    fig = methods_grid(images, heatmaps, boxes, titles)
    fig.suptitle("vit_agcam_learnt (ViT, 7x7 patches, trained here on synthetic shapes): each "
                 "method's map of the predicted class; dashed red: ground truth, green: box at 0.5",
                 fontsize=9)
    path = os.path.join(out_dir, "learnt_methods.png")
    save_small_png(fig, path)
    written.append(path)

    pairs = load_heldout(model, PAIRS_ROOT)
    with torch.no_grad():
        probabilities = model(pairs.images).softmax(dim=1)
    if pair is None:
        seen = [k for k, classes in enumerate(pairs.box_classes)
                if float(probabilities[k, classes[:2]].min()) >= PAIR_MIN_PROBABILITY]
        k = seen[0] if seen else 0
    else:
        k = pairs.names.index(pair)
    classes = pairs.box_classes[k][:2]
    image = load_image(pairs.samples[k].path)
    maps = {m: class_heatmaps(get_explainer(m, model), pairs.images[k], classes)
            for m in methods}
    specific = {m: get_explainer(m, model).class_specific for m in methods}
    fig = class_specific_figure(image, maps, classes, specific, num_classes=model.num_classes)
    names_ = _class_names(classes)
    chances = [float(probabilities[k, c]) for c in classes]
    fig.suptitle(f"vit_agcam_learnt, {pairs.names[k]}: row 1 explains class {classes[0]} "
                 f"({names_[0]}, p = {chances[0]:.2f}), row 2 class {classes[1]} ({names_[1]}, "
                 f"p = {chances[1]:.2f})", fontsize=10)
    path = os.path.join(out_dir, "learnt_two_objects.png")
    save_small_png(fig, path)
    written.append(path)

    # AGCAM on every two-object image: successes and failures alike
    from agcam.evaluation.learnt import pair_heatmaps
    agcam_pairs = pair_heatmaps(get_explainer("agcam", model), pairs)
    pair_images = [load_image(s.path) for s in pairs.samples]
    fig = pairs_grid(pair_images, agcam_pairs, [s.boxes for s in pairs.samples],
                     [_class_names(c[:2]) for c in pairs.box_classes])
    fig.suptitle("vit_agcam_learnt: AGCAM's map of each object's class on every two-object "
                 "held-out image (dashed red: the objects' boxes)", fontsize=10)
    path = os.path.join(out_dir, "learnt_agcam_pairs.png")
    save_small_png(fig, path)
    written.append(path)
    return written


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        "learnt figures", description="Render every method's maps of the learnt model on "
        "held-out images, and a class-specific two-object figure, as PNG.")
    parser.add_argument("--out", default=FIGURES_DIR, help="folder (default: docs/figures)")
    parser.add_argument("--images", nargs="+", default=list(DEFAULT_IMAGES),
                        help="held-out image names (default: %(default)s)")
    parser.add_argument("--pair", default=None,
                        help="two-object image of the all-methods figure (default: the first "
                             f"whose two classes the model gives p >= {PAIR_MIN_PROBABILITY})")
    parser.add_argument("--method", nargs="+", default=[], help="methods (default: all)")
    parser.add_argument("--checkpoint", default=None,
                        help="weights of vit_agcam_learnt (default: the committed ones)")
    return parser


def main(args: argparse.Namespace) -> int:
    torch.manual_seed(0)
    for path in render(args.out, args.images, args.pair, args.method,
                       checkpoint=args.checkpoint):
        print(f"{path} ({os.path.getsize(path) // 1024} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
