"""What the learnt CLIP (``clip_agcam_learnt``) sees for a prompt: behaviour and figure.

Two-object images of :func:`agcam.datasets.captions.sample_captioned` whose objects differ in
colour, texture and shape (:data:`PAIR_SPECS`, each drawn at :data:`PAIR_COUNT` seeds, placed at
random): for a prompt naming one attribute ("red", "striped", "circle") exactly one object fits.
Per method and prompt kind, over the images:

- ``hits``: maps whose maximum lies in the box of the object the prompt names
  (:func:`agcam.study.behaviour.peak_hits`);
- ``preferred``: images where the maps of two prompts naming different objects (the colour of
  the first object, the texture of the second) each have a higher mean inside their own
  object's box than inside the other's (:func:`agcam.study.behaviour.own_object_preferred`; a
  class-agnostic map never can).

:func:`prompt_rows` computes the table; :func:`prompts_figure` draws prompts x methods on one
image (``docs/figures/clip_prompts.png``).
"""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import numpy as np

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
METHODS = ("agcam", "legrad_clip", "grad_eclip", "gae", "rollout")


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


def prompt_rows(clip=None, methods: Sequence[str] = METHODS, count: int = PAIR_COUNT
                ) -> List[Dict[str, object]]:
    """Per method: for the prompt kinds colour (first object), texture and shape (second object),
    ``hits`` of ``maps``, and ``preferred`` of ``images`` (colour vs texture prompts)."""
    from agcam.clip import zero_shot
    from agcam.registry import get_explainer
    from agcam.study.behaviour import own_object_preferred, peak_hits
    from models.clip import create_clip
    clip = clip if clip is not None else create_clip("clip_agcam_learnt")
    items = behaviour_images(count)
    rows = []
    # prompt i of image j: its own classifier (the prompts differ per image)
    kinds = (("colour", 0, 0), ("texture", 1, 1), ("shape", 2, 1))   # (kind, attribute, object)
    for method in methods:
        row: Dict[str, object] = {"method": method, "images": len(items)}
        maps_by_kind: Dict[str, List[np.ndarray]] = {}
        for spec in PAIR_SPECS:
            prompts = [spec[obj][attr] for _, attr, obj in kinds]
            classifier = zero_shot(clip, prompts)
            chosen = [item for item in items if (item.objects[0].colour, item.objects[1].colour)
                      == (spec[0][0], spec[1][0])]
            images = _tensors(classifier, chosen)
            explainer = get_explainer(method, classifier)
            size = tuple(images.shape[-2:])
            for index, (kind, _, obj) in enumerate(kinds):
                heatmaps = _heatmaps(explainer, images, index, size)
                scale = size[0] / chosen[0].pixels.shape[0]
                for heatmap, item in zip(heatmaps, chosen):
                    boxes = [tuple(int(round(v * scale)) for v in o.box) for o in item.objects]
                    maps_by_kind.setdefault(kind, []).append((heatmap, boxes[obj], boxes))
        for kind, _, _ in kinds:
            entries = maps_by_kind[kind]
            hits, total = peak_hits([(h,) for h, _, _ in entries], [(b,) for _, b, _ in entries])
            row[kind] = f"{hits}/{total}"
        pairs = [(c[0], t[0]) for c, t in zip(maps_by_kind["colour"], maps_by_kind["texture"])]
        boxes = [c[2] for c in maps_by_kind["colour"]]
        row["preferred"] = f"{own_object_preferred(pairs, boxes)}/{len(pairs)}"
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
