"""The CLIP methods against their authors' code, float64, on a tiny random CLIP
(tests/fixtures/clip/references.npz, made by make_clip_references.py in its own environment; the
image tower's weights are ``seeded_weights`` of its shapes, rebuilt here):

* ``legrad_clip`` = WalBouss/LeGrad ``compute_legrad_clip`` (layer_index -2), compared as the
  official code returns it (bilinear x patch, min-max normalised);
* ``grad_eclip`` = Cyang-Zhao/Grad-Eclip ``generate_emap.grad_eclip`` on its ``clip_encode_dense``
  (with and without the query-key cosine), raw maps;
* ``gae`` on the zero-shot head = Chefer's bi-modal ``interpret`` (CLIP_explainability.ipynb) on
  the image tower with ``start_layer=0`` (every block).

Errors are ``max|a - b| / max|b|``.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from agcam import get_explainer
from agcam.clip import classifier_from_embeddings
from models.clip import convert_open_clip_visual
from tests.fixtures.clip.make_tiny_clip import seeded_weights
from tests.helpers import relative_error

REFERENCES = Path(__file__).parent / "fixtures" / "clip" / "references.npz"
EXACT = 1e-12


@functools.lru_cache(maxsize=None)
def reference():
    with np.load(REFERENCES) as data:
        return {k: data[k] for k in data.files}


@functools.lru_cache(maxsize=None)
def classifier():
    from open_clip.model import CLIP
    ref = reference()
    c = json.loads(str(ref["config"]))
    vision = dict(image_size=c["image_resolution"], patch_size=c["vision_patch_size"],
                  width=c["vision_width"], layers=c["vision_layers"], head_width=64)
    model = CLIP(embed_dim=c["embed_dim"], quick_gelu=True, vision_cfg=vision,
                 text_cfg=dict(context_length=8, vocab_size=64, width=32, heads=2, layers=1))
    visual = model.visual.double()
    visual.load_state_dict(seeded_weights({k: v.shape for k, v in visual.state_dict().items()}))
    prompts = json.loads(str(ref["prompts"]))
    return classifier_from_embeddings(convert_open_clip_visual(visual.eval()),
                                      torch.from_numpy(ref["text"]),
                                      float(ref["logit_scale"]), labels=prompts)


def images():
    return torch.from_numpy(reference()["images"])


def explain(name, target, **options):
    return get_explainer(name, classifier(), **options).explain(images(), target)[1]


def test_the_classifier_gives_the_reference_logits():
    with torch.no_grad():
        logits = classifier()(images())
    assert relative_error(logits, reference()["logits"]) <= EXACT


@pytest.mark.parametrize("prompt", [0, 1, 2])
def test_legrad_clip_equals_the_official_code(prompt):
    maps = explain("legrad_clip", prompt)                        # [B, 4, 4], raw
    up = F.interpolate(maps[:, None], scale_factor=8, mode="bilinear")[:, 0]
    low = up.flatten(1).min(1).values[:, None, None]
    high = up.flatten(1).max(1).values[:, None, None]
    assert relative_error((up - low) / (high - low), reference()["legrad"][:, prompt]) <= EXACT


@pytest.mark.parametrize("prompt", [0, 2])
@pytest.mark.parametrize("ksim", [True, False])
def test_grad_eclip_equals_the_authors_code(prompt, ksim):
    key = "grad_eclip" if ksim else "grad_eclip_wo_ksim"
    maps = explain("grad_eclip", prompt, ksim=ksim)
    assert relative_error(maps, reference()[key][:, prompt]) <= EXACT


def test_gae_on_the_zero_shot_head_equals_chefers_bimodal_interpret():
    for prompt in range(3):
        maps = explain("gae", prompt).flatten(1)
        assert relative_error(maps, reference()["chefer_all"][:, prompt]) <= EXACT
    # the notebook's default, start_layer=-1, reads the last block only: not the same map
    assert relative_error(explain("gae", 0).flatten(1), reference()["chefer_last"][:, 0]) > 1e-3
