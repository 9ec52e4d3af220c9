"""What the learnt CLIP (``clip_agcam_learnt``) sees for a prompt: behaviour and figure.

Two-object images of :func:`agcam.datasets.captions.sample_captioned` whose objects differ in
colour, texture and shape (:data:`PAIR_SPECS`, each drawn at :data:`PAIR_COUNT` seeds, placed at
random): for a prompt naming one attribute ("red", "striped", "circle") exactly one object fits.
Per method and prompt kind, the two objects' words of that kind are explained on each image:

- ``hits``: maps whose maximum lies in the box of the object the prompt names
  (:func:`agcam.study.behaviour.peak_hits`);
- ``preferred``: images where both maps have a higher mean inside their own object's box than
  inside the other's (:func:`agcam.study.behaviour.own_object_preferred`; a class-agnostic map
  never can).

:func:`prompt_rows` computes the table; :func:`prompts_figure` draws prompts x methods on one
image (``docs/figures/clip_prompts.png``).
"""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import numpy as np

from agcam.study.figures import FigureContext, register_figure

#: (first object, second object): (colour, texture, shape) words, every attribute different
PAIR_SPECS: Tuple[Tuple[Tuple[str, str, str], Tuple[str, str, str]], ...] = (
    (("red", "plain", "square"), ("blue", "striped", "circle")),
    (("green", "striped", "triangle"), ("yellow", "plain", "cross")),
    (("blue", "plain", "circle"), ("red", "striped", "square")),
    (("yellow", "striped", "cross"), ("green", "plain", "triangle")),
)
PAIR_COUNT = 4
#: the stream of the behaviour images (training draws TRAIN_SEED, the checks FRESH_SEED)
BEHAVIOUR_SEED = 2025
#: the methods of the table and the figure (class-agnostic rollout: the floor)
METHODS = ("agcam", "legrad_clip", "grad_eclip", "gae", "lrp", "rollout")


def behaviour_images(count: int = PAIR_COUNT):
    """The two-object images: ``count`` per :data:`PAIR_SPECS` entry."""
    from agcam.datasets.captions import sample_captioned
    return [sample_captioned(BEHAVIOUR_SEED, i * len(PAIR_SPECS) + k, pair=True, specs=spec)
            for i in range(count) for k, spec in enumerate(PAIR_SPECS)]


def _tensors(model, items):
    import torch

    from agcam.datasets.synthetic import jpeg_roundtrip
    from models.vit import build_transform
    transform = build_transform(model)
    return torch.stack([transform(jpeg_roundtrip(item.pixels)) for item in items])


def _heatmaps(explainer, images, target: int, size) -> np.ndarray:
    from agcam.maps import to_heatmap
    _, maps = explainer.explain(images, target)
    return to_heatmap(maps.detach().float(), size).cpu().numpy()


def kind_heatmaps(method: str, clip, items, kind: str):
    """Per image of ``items``, ``method``'s maps of its two objects' words of one ``kind``
    (``colour``, ``texture`` or ``shape``: the zero-shot classifier of those two words,
    explained for each), the objects' boxes at the input size, and the two words."""
    from agcam.clip import zero_shot
    from agcam.datasets.captions import KIND_NAMES
    from agcam.registry import get_explainer
    attribute = KIND_NAMES.index(kind)
    maps, boxes, words = [], [], []
    for spec in PAIR_SPECS:
        chosen = [item for item in items if (item.objects[0].colour, item.objects[1].colour)
                  == (spec[0][0], spec[1][0])]
        pair = (spec[0][attribute], spec[1][attribute])
        classifier = zero_shot(clip, list(pair))
        images = _tensors(classifier, chosen)
        size = tuple(images.shape[-2:])
        explainer = get_explainer(method, classifier)
        first, second = (_heatmaps(explainer, images, t, size) for t in (0, 1))
        scale = size[0] / chosen[0].pixels.shape[0]
        for k, item in enumerate(chosen):
            maps.append((first[k], second[k]))
            boxes.append([tuple(int(round(v * scale)) for v in o.box) for o in item.objects])
            words.append(pair)
    return maps, boxes, words


def word_preferred(maps, boxes, words, word: str) -> Tuple[int, int]:
    """``(maps, of)``: the maps of prompt ``word`` whose mean inside its own object's box is
    higher than inside the other object's."""
    from agcam.study.behaviour import box_mean
    hits = total = 0
    for pair_maps, pair_boxes, pair_words in zip(maps, boxes, words):
        for t in (0, 1):
            if pair_words[t] == word:
                hits += box_mean(pair_maps[t], pair_boxes[t]) > \
                    box_mean(pair_maps[t], pair_boxes[1 - t])
                total += 1
    return hits, total


#: the words of the issue's example, one per kind, whose maps :func:`prompt_rows` reports alone
EXAMPLE_WORDS = ("red", "striped", "circle")


def prompt_rows(clip=None, methods: Sequence[str] = METHODS, count: int = PAIR_COUNT
                ) -> List[Dict[str, object]]:
    """Per method and prompt kind (colour, texture, shape): on every behaviour image, the two
    objects' words of that kind ("red" and "blue", "plain" and "striped", "square" and
    "circle") explained one by one; ``<kind>`` counts the maps whose maximum lies in their own
    object's box (of 2 per image), ``<kind>_preferred`` the images where both maps have the
    higher mean inside their own object's box (never, for a map that ignores the prompt), and
    ``"red"``, ``"striped"``, ``"circle"`` the maps of that word alone with the higher mean
    inside its own object's box."""
    from agcam.datasets.captions import KIND_NAMES
    from agcam.study.behaviour import own_object_preferred, peak_hits
    from models.clip import create_clip
    clip = clip if clip is not None else create_clip("clip_agcam_learnt")
    items = behaviour_images(count)
    rows = []
    for method in methods:
        row: Dict[str, object] = {"method": method, "images": len(items)}
        for kind, word in zip(KIND_NAMES, EXAMPLE_WORDS):
            maps, boxes, words = kind_heatmaps(method, clip, items, kind)
            hits, total = peak_hits(maps, boxes)
            row[kind] = f"{hits}/{total}"
            row[f"{kind}_preferred"] = f"{own_object_preferred(maps, boxes)}/{len(maps)}"
            row[word] = "{}/{}".format(*word_preferred(maps, boxes, words, word))
        rows.append(row)
    return rows


def prompts_figure(path: str, clip=None, methods: Sequence[str] = METHODS,
                   prompts: Sequence[str] = ("red", "blue", "striped", "circle",
                                             "a blue striped circle"),
                   index: int = 0) -> List[str]:
    """Prompts x methods on behaviour image ``index`` (a red plain square and a blue striped
    circle): a row per prompt, the image titled with the prompt's zero-shot probability (softmax
    over the prompts), then a column per method. Returns the methods shown."""
    import torch
    from matplotlib.figure import Figure

    from agcam.clip import zero_shot
    from agcam.figures.plotting import overlay, show_image
    from agcam.registry import get_explainer, method_label
    from agcam.study.figures import save_small_png
    from models.clip import create_clip
    clip = clip if clip is not None else create_clip("clip_agcam_learnt")
    item = behaviour_images(1)[index]
    classifier = zero_shot(clip, list(prompts))
    images = _tensors(classifier, [item])
    with torch.no_grad():
        probs = classifier(images).softmax(dim=1)[0]
    size = tuple(images.shape[-2:])
    fig = Figure(figsize=(1.6 * (len(methods) + 1), 1.7 * len(prompts)), dpi=100)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.93, wspace=0.05, hspace=0.3)
    axes = fig.subplots(len(prompts), len(methods) + 1, squeeze=False)
    image = item.pixels
    for row, prompt in enumerate(prompts):
        show_image(axes[row, 0], image, f'"{prompt}" {float(probs[row]):.0%}')
        for col, method in enumerate(methods, start=1):
            heatmap = _heatmaps(get_explainer(method, classifier), images, row, size)[0]
            from PIL import Image
            overlay(axes[row, col], Image.fromarray(image).resize(size[::-1]), heatmap,
                    title=method_label(method) if row == 0 else None)
    for ax in axes.flat:
        ax.set_axis_off()
    save_small_png(fig, path)
    return list(methods)


@register_figure("clip_prompts.png",
                 summary="the learnt CLIP: prompts x CLIP methods on a two-object image")
def clip_prompts(context: FigureContext, path: str) -> List[str]:
    """:func:`prompts_figure` with the methods of :data:`METHODS` that ``context`` draws (all of
    them when it draws none of them)."""
    chosen = [m for m in METHODS if m in context.methods] or list(METHODS)
    return prompts_figure(path, methods=chosen)
