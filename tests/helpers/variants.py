"""The model variants every explainer must handle (the contract tests run each method on each)."""
from __future__ import annotations

#: The model variants every explainer must handle at random init: name -> (grid, prefix tokens,
#: batch size used in the tests). Own grids (7x7, 24x24), DeiT's two prefix tokens, layer scale.
VARIANTS = {
    "vit_tiny_patch16_224": ((14, 14), 1, 2),
    "vit_small_patch32_224": ((7, 7), 1, 2),
    # the 24x24 grid of 384-pixel inputs (ViT-Ti: the geometry, at a 16th of ViT-B/384's cost)
    "vit_tiny_patch16_384": ((24, 24), 1, 2),
    "deit_tiny_distilled_patch16_224": ((14, 14), 2, 2),
    "deit3_small_patch16_224": ((14, 14), 1, 2),
    # a CLIP zero-shot head (agcam.clip): projection, L2 normalisation, prompt embeddings
    "zero_shot_tiny_clip": ((4, 4), 1, 2),
}

#: the prompts of the zero-shot variant
ZERO_SHOT_PROMPTS = ("red", "striped", "circle")


def make_variant(name: str):
    """The variant's model: a timm model at random init, or the zero-shot classifier of a tiny
    random CLIP on :data:`ZERO_SHOT_PROMPTS`."""
    if name == "zero_shot_tiny_clip":
        from agcam.clip import zero_shot
        from tests.fixtures.clip.make_tiny_clip import tiny_word_clip
        return zero_shot(tiny_word_clip(), list(ZERO_SHOT_PROMPTS))
    from models import create_model
    return create_model(name, pretrained=False)


