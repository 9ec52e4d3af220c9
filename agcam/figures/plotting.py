"""Figures of explanations: heatmap overlays, boxes, one image across methods, class-specific maps.

Every function builds a :class:`matplotlib.figure.Figure` directly (no pyplot state, no GUI
backend), so the command line can save thousands of them without leaking windows and the notebook
shows them as they are returned. Heatmaps are the model-input-sized [0, 1] maps of
:func:`agcam.figures.heatmaps.explain_heatmaps`; they are stretched over the image in its own pixel
coordinates, so ground-truth boxes in original pixels draw as they are and boxes found on the
heatmap are scaled from input to image pixels (the squash resize of the paper's preprocessing).
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence, Tuple

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from PIL import Image

from agcam.figures.heatmaps import (
    Box,
    boxes_at,
    class_name,
    method_label,
    rescale_boxes,
)

PRED_COLOR = "lime"   # boxes found on a heatmap
GT_COLOR = "red"      # ground-truth boxes
CMAP = "jet"
ALPHA = 0.5
DPI = 100
#: inches per panel column in the notebook figures
PANEL_WIDTH = 3.2
#: size of the per-image, per-method figure of the explain command: 1200 x 400 pixels
EXPLANATION_FIGSIZE = (12.0, 4.0)
#: longest side an image is drawn at (keeps PNGs of large photographs small)
DISPLAY_SIZE = 512

TopK = Sequence[Tuple[int, float]]


def _as_image(image) -> Image.Image:
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    return Image.fromarray(np.asarray(image)).convert("RGB")


def _thumbnail(image: Image.Image) -> Image.Image:
    if max(image.size) <= DISPLAY_SIZE:
        return image
    small = image.copy()
    small.thumbnail((DISPLAY_SIZE, DISPLAY_SIZE), Image.BILINEAR)
    return small


def _panel_height(image: Image.Image) -> float:
    """Inches of a figure row holding ``image`` at :data:`PANEL_WIDTH` plus a two-line title
    (rows fit the image's aspect, so wide images leave no blank bands)."""
    width, height = image.size
    return PANEL_WIDTH * min(height / width, 1.5) + 0.5


def show_image(ax: Axes, image, title: Optional[str] = None) -> Tuple[int, int]:
    """Draw ``image`` in its own pixel coordinates; returns its ``(width, height)``."""
    image = _as_image(image)
    width, height = image.size
    ax.imshow(_thumbnail(image), extent=(0, width, height, 0), interpolation="bilinear")
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=9)
    return width, height


def overlay(ax: Axes, image, heatmap: np.ndarray, alpha: float = ALPHA, cmap: str = CMAP,
            title: Optional[str] = None) -> None:
    """``image`` with ``heatmap`` (any size, values in [0, 1]) stretched over it in ``cmap``."""
    width, height = show_image(ax, image, title)
    ax.imshow(np.asarray(heatmap, dtype=np.float32), cmap=cmap, alpha=alpha, vmin=0.0, vmax=1.0,
              extent=(0, width, height, 0), interpolation="bilinear")
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)


def draw_boxes(ax: Axes, boxes: Sequence[Box], color: str, label: Optional[str] = None,
               linewidth: float = 2.0, linestyle: str = "-") -> None:
    """Rectangles ``(xmin, ymin, xmax, ymax)`` in the coordinates of the drawn image; ``label``
    names the first one in the legend."""
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=color,
                               linewidth=linewidth, linestyle=linestyle,
                               label=label if i == 0 else None))


def heatmap_boxes(heatmap: np.ndarray, image_size: Tuple[int, int], threshold: float
                  ) -> Sequence[Box]:
    """The boxes of ``heatmap`` at ``threshold``, in the pixels of an image of ``image_size``."""
    height, width = np.asarray(heatmap).shape[-2:]
    return rescale_boxes(boxes_at(heatmap, threshold), (width, height), image_size)


def boxes_panel(ax: Axes, image, heatmap: np.ndarray, threshold: float,
                gt_boxes: Optional[Sequence[Box]] = None, title: Optional[str] = None) -> None:
    """The image with the heatmap's boxes at ``threshold`` and the ground truth beside them."""
    image = _as_image(image)
    show_image(ax, image, title)
    if gt_boxes:
        draw_boxes(ax, gt_boxes, GT_COLOR, label="ground truth", linestyle="--")
    draw_boxes(ax, heatmap_boxes(heatmap, image.size, threshold), PRED_COLOR,
               label=f"heatmap > {threshold:g}")
    if ax.patches:
        ax.legend(loc="lower left", fontsize=7, framealpha=0.7)


def top_k_text(top: TopK, num_classes: int = 1000,
               class_names: Optional[Sequence[str]] = None) -> str:
    return "\n".join(f"{p:6.1%}  {class_name(i, num_classes, class_names)[:40]} ({i})"
                     for i, p in top)


def methods_figure(image, heatmaps: Mapping[str, np.ndarray], top: Optional[TopK] = None,
                   gt_boxes: Optional[Sequence[Box]] = None, threshold: float = 0.5,
                   title: Optional[str] = None, num_classes: int = 1000,
                   class_names: Optional[Sequence[str]] = None) -> Figure:
    """One image across methods (``class_names``: the model's own, else ImageNet's).

    Column 0: the image (ground truth dashed red) over its top-k predicted classes. Then one
    column per method: its heatmap overlaid on the image (top) and the boxes the heatmap gives at
    ``threshold`` (green) beside the ground truth (bottom).
    """
    image = _as_image(image)
    cols = 1 + len(heatmaps)
    fig = Figure(figsize=(PANEL_WIDTH * cols, 2 * _panel_height(image)), dpi=DPI,
                 layout="constrained")
    axes = fig.subplots(2, cols, squeeze=False)
    show_image(axes[0, 0], image, title)
    if gt_boxes:
        draw_boxes(axes[0, 0], gt_boxes, GT_COLOR, linestyle="--")
    axes[1, 0].set_axis_off()
    if top:
        axes[1, 0].text(0.0, 1.0, "top-5 predictions\n" + top_k_text(top, num_classes, class_names),
                        va="top", ha="left", family="monospace", fontsize=7,
                        transform=axes[1, 0].transAxes)
    for col, (method, heatmap) in enumerate(heatmaps.items(), start=1):
        overlay(axes[0, col], image, heatmap, title=method_label(method))
        boxes_panel(axes[1, col], image, heatmap, threshold, gt_boxes,
                    title=f"boxes at {threshold:g}")
    return fig


def explanation_figure(image, heatmap: np.ndarray, method: str, explained_class: int,
                       threshold: float = 0.5, top: Optional[TopK] = None,
                       gt_boxes: Optional[Sequence[Box]] = None, title: Optional[str] = None,
                       num_classes: int = 1000,
                       class_names: Optional[Sequence[str]] = None) -> Figure:
    """The explain command's figure: image | overlay | boxes at ``threshold`` (1200 x 400 px);
    ``class_names``: the model's own (``id2label``), else ImageNet's."""
    image = _as_image(image)
    fig = Figure(figsize=EXPLANATION_FIGSIZE, dpi=DPI)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.02, top=0.86, wspace=0.04)
    axes = fig.subplots(1, 3)
    if top:
        index, prob = top[0]
        title = (title + "\n" if title else "") + \
            f"top-1: {class_name(index, num_classes, class_names)[:40]} ({prob:.1%})"
    show_image(axes[0], image, title)
    overlay(axes[1], image, heatmap,
            title=f"{method_label(method)}: "
                  f"{class_name(explained_class, num_classes, class_names)[:40]} "
                  f"({explained_class})")
    boxes_panel(axes[2], image, heatmap, threshold, gt_boxes, title=f"boxes at {threshold:g}")
    return fig


def class_specific_figure(image, heatmaps: Mapping[str, Mapping[int, np.ndarray]],
                          classes: Sequence[int], class_specific: Mapping[str, bool],
                          num_classes: int = 1000,
                          class_names: Optional[Sequence[str]] = None) -> Figure:
    """Class-specific explanations on one image: a row per class, a column per method.

    ``heatmaps[method][cls]`` is the method's map for class ``cls``; a class-agnostic method
    (``class_specific[method]`` false, e.g. Rollout) has one map, drawn in every row.
    """
    image = _as_image(image)
    methods = list(heatmaps)
    fig = Figure(figsize=(PANEL_WIDTH * (1 + len(methods)), _panel_height(image) * len(classes)),
                 dpi=DPI, layout="constrained")
    axes = fig.subplots(len(classes), 1 + len(methods), squeeze=False)
    for row, cls in enumerate(classes):
        name = class_name(cls, num_classes, class_names)
        # "class 1: red striped"; a model without names gives "class 1", not "class 1: class 1"
        label = name if name == f"class {cls}" else f"class {cls}: {name[:40]}"
        show_image(axes[row, 0], image, label)
        for col, method in enumerate(methods, start=1):
            maps = heatmaps[method]
            if class_specific[method]:
                heatmap, note = maps[cls], f"for {name.split(',')[0]}"
            else:
                heatmap, note = next(iter(maps.values())), "same map for every class"
            overlay(axes[row, col], image, heatmap, title=f"{method_label(method)}\n{note}")
    return fig


def save_figure(fig: Figure, path: str) -> None:
    """Write ``fig`` as PNG with the Agg canvas (no display needed)."""
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=DPI, format="png")
