"""Every committed figure, from one registry: ``agcam figures`` draws them all.

A figure is a function registered with :func:`register_figure` under its file name; it draws from
a :class:`FigureContext` (the model, its held-out images and the methods, loaded once and shared)
and returns the methods it shows. :func:`render` writes the PNGs and the sidecar
``docs/figures/figures.json`` (:data:`SIDECAR`): per figure the methods shown and whether it must
show every registered method, so that a fast test can tell when a newly registered method is
missing from a committed figure. Figures of other parts register themselves the same way in
their own module, named in :data:`FIGURE_MODULES` (imported on first use, like the methods).

The learnt model's figures (``vit_agcam_learnt``, its committed weights):

- ``learnt_methods.png``: a row per held-out image (default: the first image of classes 1, 2, 5
  and 6, fixed before any map was looked at), the image with its ground-truth box (dashed red),
  then each method's heatmap of the predicted class with the box it gives at 0.5 (green); the
  methods wrap into bands of :data:`BAND` columns;
- ``learnt_two_objects.png``: one two-object image (default: the first to which the model gives
  both classes a probability of at least :data:`PAIR_MIN_PROBABILITY`), a row per object class
  (named by the model's own class names), every method's map of that class;
- ``learnt_agcam_pairs.png``: AGCAM's two class maps on every two-object image, failures
  included.
"""
from __future__ import annotations

import importlib
import io
import json
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence

from agcam.study.heldout import FIGURES_DIR, LEARNT_MODEL, PAIRS_ROOT

#: the first held-out image of classes 1, 2, 5 and 6 (20 per class, written class by class)
DEFAULT_IMAGES = ("synth_00020", "synth_00040", "synth_00100", "synth_00120")
#: the all-methods two-object figure shows the first two-object image on which the model gives
#: both classes at least this probability (explaining a class it gives 1% says little)
PAIR_MIN_PROBABILITY = 0.2
PANEL = 1.6  # inches per panel
#: methods per band of the all-methods figures (wider figures wrap into bands)
BAND = 8
#: the sidecar listing what each committed figure shows
SIDECAR = "figures.json"
#: modules whose import registers figures (this one; other parts add theirs)
FIGURE_MODULES = ("agcam.study.figures", "agcam.study.clip")


@dataclass
class FigureSpec:
    """A registered figure: its file name, whether it must show every registered method, what
    it shows (one line) and the function drawing it (``function(context, path) -> methods``)."""

    name: str
    every_method: bool
    summary: str
    function: Callable[["FigureContext", str], List[str]]


FIGURES: Dict[str, FigureSpec] = {}


def register_figure(name: str, every_method: bool = False, summary: str = ""):
    """Decorator: register ``function(context, path) -> methods shown`` as figure ``name``
    (the PNG's file name under ``docs/figures``)."""
    def wrap(function):
        if name in FIGURES and FIGURES[name].function is not function:
            raise ValueError(f"two figures registered as {name!r}")
        FIGURES[name] = FigureSpec(name, every_method, summary, function)
        return function
    return wrap


def load_figures() -> Dict[str, FigureSpec]:
    """Every registered figure (the modules of :data:`FIGURE_MODULES` imported)."""
    for module in FIGURE_MODULES:
        importlib.import_module(module)
    return FIGURES


@dataclass
class FigureContext:
    """What the figures share, loaded on first use: the model, the held-out images, the pairs."""

    methods: List[str]
    images: Sequence[str] = DEFAULT_IMAGES
    pair: Optional[str] = None
    checkpoint: Optional[str] = None
    device: Optional[str] = None
    _cache: Dict[str, Any] = field(default_factory=dict)

    def _get(self, key, make):
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    @property
    def model(self):
        import torch

        from models.vit import create_model
        return self._get("model", lambda: create_model(
            LEARNT_MODEL, checkpoint=self.checkpoint,
            device=torch.device(self.device) if self.device else torch.device("cpu")))

    @property
    def heldout(self):
        from agcam.study.heldout import load_heldout
        return self._get("heldout", lambda: load_heldout(self.model))

    @property
    def pairs(self):
        from agcam.study.heldout import load_heldout
        return self._get("pairs", lambda: load_heldout(self.model, PAIRS_ROOT))

    def explainer(self, method: str):
        from agcam.registry import get_explainer
        return self._get(("explainer", method), lambda: get_explainer(method, self.model))

    def class_names(self, classes: Sequence[int]) -> List[str]:
        """The model's own names of ``classes`` (``pretrained_cfg["label_names"]``)."""
        from agcam.figures.heatmaps import class_name, class_names_of, num_classes_of
        names = class_names_of(self.model)
        return [class_name(int(c), num_classes_of(self.model), names) for c in classes]


def save_small_png(fig, path: str, colours: int = 96) -> int:
    """Save with :func:`agcam.figures.plotting.save_figure`, then store the PNG with a ``colours``
    palette (the figures are overlays of smooth maps: a palette keeps them legible at a fraction
    of the bytes). Returns the size in bytes."""
    from PIL import Image

    from agcam.figures.plotting import save_figure
    buffer = io.BytesIO()
    save_figure(fig, buffer)
    with Image.open(io.BytesIO(buffer.getvalue())) as image:
        small = image.convert("RGB").quantize(colours, method=Image.Quantize.MEDIANCUT)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    small.save(path, format="PNG", optimize=True)
    return os.path.getsize(path)


def banded_grid(rows: int, methods: Sequence[str], draw_image: Callable[[Any, int], None],
                draw_map: Callable[[Any, int, str], None], band: int = BAND,
                panel: float = PANEL):
    """A figure of ``rows`` rows x ``methods`` columns, wrapped into bands of ``band`` methods:
    each band repeats the rows, ``draw_image(ax, row)`` in its first column and
    ``draw_map(ax, row, method)`` in the others (titled on the band's first row)."""
    from matplotlib.figure import Figure

    bands = [list(methods[i:i + band]) for i in range(0, len(methods), band)] or [[]]
    width = 1 + max(len(b) for b in bands)
    fig = Figure(figsize=(panel * width, (panel + 0.35) * rows * len(bands)), dpi=100,
                 layout="constrained")
    axes = fig.subplots(rows * len(bands), width, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for b, chunk in enumerate(bands):
        for row in range(rows):
            draw_image(axes[b * rows + row, 0], row)
            for col, method in enumerate(chunk, start=1):
                draw_map(axes[b * rows + row, col], row, method)
    return fig


@register_figure("learnt_methods.png", every_method=True,
                 summary="every method's map of the predicted class on four held-out images")
def learnt_methods(context: FigureContext, path: str) -> List[str]:
    from agcam.figures.heatmaps import explain_heatmaps
    from agcam.figures.plotting import (
        GT_COLOR,
        PRED_COLOR,
        draw_boxes,
        heatmap_boxes,
        overlay,
        show_image,
    )
    from agcam.registry import method_label
    from models.vit import load_image

    data = context.heldout
    index = {name: i for i, name in enumerate(data.names)}
    missing = [n for n in context.images if n not in index]
    if missing:
        from agcam.errors import UsageError
        raise UsageError(f"--images {' '.join(missing)}: not in the held-out set")
    rows = [index[n] for n in context.images]
    images = [load_image(data.samples[i].path) for i in rows]
    heatmaps, predictions = {}, None
    for method in context.methods:
        predictions, heatmaps[method] = explain_heatmaps(context.explainer(method),
                                                         data.images[rows])
    truth = context.class_names([int(data.labels[i]) for i in rows])
    predicted = context.class_names([int(p) for p in predictions])
    boxes = [data.samples[i].boxes for i in rows]      # in the images' own pixels, as drawn

    def draw_image(ax, row):
        show_image(ax, images[row], f"{truth[row]}\npredicted: {predicted[row]}")
        draw_boxes(ax, boxes[row], GT_COLOR, linestyle="--")

    def draw_map(ax, row, method):
        heatmap = heatmaps[method][row]
        overlay(ax, images[row], heatmap, title=method_label(method) if row == 0 else None)
        draw_boxes(ax, heatmap_boxes(heatmap, images[row].size, 0.5), PRED_COLOR,
                   linewidth=1.5)

    fig = banded_grid(len(rows), context.methods, draw_image, draw_map)
    fig.suptitle(f"{LEARNT_MODEL} (ViT, 7x7 patches, trained here on synthetic shapes): each "
                 "method's map of the predicted class; dashed red: ground truth, green: box at 0.5",
                 fontsize=9)
    save_small_png(fig, path)
    return list(context.methods)


@register_figure("learnt_two_objects.png", every_method=True,
                 summary="every method's map of each class of one two-object image")
def learnt_two_objects(context: FigureContext, path: str) -> List[str]:
    import torch

    from agcam.figures.heatmaps import class_heatmaps
    from agcam.figures.plotting import overlay, show_image
    from agcam.registry import method_label
    from models.vit import load_image

    pairs = context.pairs
    with torch.no_grad():
        probabilities = context.model(pairs.images).softmax(dim=1)
    if context.pair is None:
        seen = [k for k, classes in enumerate(pairs.box_classes)
                if float(probabilities[k, classes[:2]].min()) >= PAIR_MIN_PROBABILITY]
        k = seen[0] if seen else 0
    elif context.pair in pairs.names:
        k = pairs.names.index(context.pair)
    else:
        from agcam.errors import UsageError
        raise UsageError(f"--pair {context.pair}: not a two-object image "
                         f"({', '.join(pairs.names)})")
    classes = [int(c) for c in pairs.box_classes[k][:2]]
    names = context.class_names(classes)
    chances = [float(probabilities[k, c]) for c in classes]
    image = load_image(pairs.samples[k].path)
    maps = {m: class_heatmaps(context.explainer(m), pairs.images[k], classes)
            for m in context.methods}

    def draw_image(ax, row):
        show_image(ax, image, f"class {classes[row]}: {names[row]}\np = {chances[row]:.2f}")

    def draw_map(ax, row, method):
        if context.explainer(method).class_specific:
            heatmap, note = maps[method][classes[row]], f"for {names[row]}"
        else:
            heatmap, note = next(iter(maps[method].values())), "same for every class"
        overlay(ax, image, heatmap, title=f"{method_label(method)}\n{note}")

    fig = banded_grid(len(classes), context.methods, draw_image, draw_map)
    fig.suptitle(f"{LEARNT_MODEL}, {pairs.names[k]}: in each band, row 1 explains class "
                 f"{classes[0]} ({names[0]}), row 2 class {classes[1]} ({names[1]})",
                 fontsize=10)
    save_small_png(fig, path)
    return list(context.methods)


@register_figure("learnt_agcam_pairs.png",
                 summary="AGCAM's map of each object's class on every two-object image")
def learnt_agcam_pairs(context: FigureContext, path: str) -> List[str]:
    from matplotlib.figure import Figure

    from agcam.figures.plotting import GT_COLOR, draw_boxes, overlay, show_image
    from agcam.study.behaviour import pair_heatmaps
    from models.vit import load_image

    pairs = context.pairs
    heatmaps = pair_heatmaps(context.explainer("agcam"), pairs)
    columns = 4
    rows = (len(pairs.samples) + columns - 1) // columns
    fig = Figure(figsize=(PANEL * 3 * columns, (PANEL + 0.3) * rows), dpi=100,
                 layout="constrained")
    axes = fig.subplots(rows, 3 * columns, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for k, sample in enumerate(pairs.samples):
        row, col = divmod(k, columns)
        image = load_image(sample.path)
        show_image(axes[row, 3 * col], image, "image")
        draw_boxes(axes[row, 3 * col], sample.boxes, GT_COLOR, linestyle="--", linewidth=1.5)
        names = context.class_names(pairs.box_classes[k][:2])
        for j in range(2):
            ax = axes[row, 3 * col + 1 + j]
            overlay(ax, image, heatmaps[k][j], title=f"for {names[j]}")
            draw_boxes(ax, [sample.boxes[j]], GT_COLOR, linestyle="--", linewidth=1.5)
    fig.suptitle(f"{LEARNT_MODEL}: AGCAM's map of each object's class on every two-object "
                 "held-out image (dashed red: the objects' boxes)", fontsize=10)
    save_small_png(fig, path)
    return ["agcam"]


def read_sidecar(out: str = FIGURES_DIR) -> Dict[str, Any]:
    """``out/figures.json`` (an empty record when there is none)."""
    path = os.path.join(out, SIDECAR)
    if not os.path.exists(path):
        return {"generated_by": "agcam figures", "figures": {}}
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def render(out: str = FIGURES_DIR, figures: Optional[Sequence[str]] = None,
           methods: Optional[Sequence[str]] = None, images: Sequence[str] = DEFAULT_IMAGES,
           pair: Optional[str] = None, checkpoint: Optional[str] = None,
           device: Optional[str] = None, log: Callable[[str], None] = print) -> List[str]:
    """Draw ``figures`` (default: every registered one) into ``out`` with ``methods`` (default:
    every registered method, floors last) and record what each shows in ``out/figures.json``."""
    from agcam.errors import UsageError

    registered = load_figures()
    names = list(figures) if figures else list(registered)
    unknown = [n for n in names if n not in registered]
    if unknown:
        raise UsageError(f"--figure {' '.join(unknown)}: unknown; choose from "
                         f"{', '.join(registered)}")
    import torch

    from agcam.registry import available_methods
    from agcam.study.table import study_methods

    torch.manual_seed(0)
    context = FigureContext(study_methods(methods), images, pair, checkpoint, device)
    sidecar = read_sidecar(out)
    sidecar["registered_methods"] = list(available_methods())
    written = []
    for name in names:
        spec = registered[name]
        path = os.path.join(out, name)
        os.makedirs(out, exist_ok=True)
        shown = spec.function(context, path)
        sidecar["figures"][name] = {"methods": list(shown), "every_method": spec.every_method,
                                    "summary": spec.summary, "bytes": os.path.getsize(path)}
        log(f"{path} ({os.path.getsize(path) // 1024} KB, {len(shown)} method(s))")
        written.append(path)
    sidecar["figures"] = dict(sorted(sidecar["figures"].items()))
    with open(os.path.join(out, SIDECAR), "w", encoding="utf-8") as handle:
        json.dump(sidecar, handle, indent=1)
        handle.write("\n")
    return written
