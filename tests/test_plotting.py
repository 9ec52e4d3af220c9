"""Figure helpers on hand-made heatmaps (no model): class names, box scaling, figures draw."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from agcam.figures.heatmaps import class_name, parse_class, rescale_boxes


def test_parse_class_accepts_index_wnid_and_name():
    assert parse_class("281") == 281
    assert parse_class("n02123045") == 281
    assert parse_class("tabby") == parse_class("Tabby, tabby cat") == 281
    assert class_name(967) == "espresso"
    for bad in ("1000", "n99999999", "no such class"):
        with pytest.raises(ValueError):
            parse_class(bad)
    assert parse_class("3", num_classes=10) == 3
    assert class_name(3, num_classes=10) == "class 3"


def test_rescale_boxes_from_input_to_image_pixels():
    assert rescale_boxes([(56, 28, 112, 224)], (224, 224), (448, 112)) == [(112, 14, 224, 112)]


def test_heatmap_boxes_land_on_the_hot_region():
    from agcam.figures.plotting import heatmap_boxes
    heatmap = np.zeros((224, 224), dtype=np.float32)
    heatmap[112:168, 0:56] = 1.0  # bottom-left quarter of the left half
    (x0, y0, x1, y1), = heatmap_boxes(heatmap, (448, 112), 0.5)
    assert (x0, y0) == (0, 56) and abs(x1 - 112) <= 2 and abs(y1 - 84) <= 1


def test_figures_draw_and_save(tmp_path):
    from agcam.figures.plotting import (
        DPI,
        EXPLANATION_FIGSIZE,
        class_specific_figure,
        explanation_figure,
        methods_figure,
        save_figure,
    )
    image = Image.fromarray(np.full((90, 160, 3), 128, dtype=np.uint8))
    ramp = np.tile(np.linspace(0, 1, 224, dtype=np.float32), (224, 1))
    top = [(281, 0.5), (285, 0.2), (967, 0.1), (1, 0.05), (2, 0.01)]
    heatmaps = {"agcam": ramp, "rollout": ramp[::-1]}

    fig = methods_figure(image, heatmaps, top, gt_boxes=[(10, 10, 80, 60)], title="grey")
    assert len(fig.axes) == 6
    save_figure(fig, tmp_path / "methods.png")

    fig = explanation_figure(image, ramp, "agcam", 281, top=top)
    save_figure(fig, tmp_path / "one.png")
    with Image.open(tmp_path / "one.png") as png:
        assert png.size == (round(EXPLANATION_FIGSIZE[0] * DPI),
                            round(EXPLANATION_FIGSIZE[1] * DPI))

    fig = class_specific_figure(image, {"agcam": {281: ramp, 967: ramp.T}, "rollout": {281: ramp}},
                                [281, 967], {"agcam": True, "rollout": False})
    assert len(fig.axes) == 6
    save_figure(fig, tmp_path / "classes.png")
