"""The model variants every explainer must handle (the contract tests run each method on each)."""
from __future__ import annotations

#: The model variants every explainer must handle at random init: name -> (grid, prefix tokens,
#: batch size used in the tests). Own grids (7x7, 24x24), DeiT's two prefix tokens, layer scale.
VARIANTS = {
    "vit_tiny_patch16_224": ((14, 14), 1, 2),
    "vit_small_patch32_224": ((7, 7), 1, 2),
    "vit_base_patch16_384": ((24, 24), 1, 1),
    "deit_tiny_distilled_patch16_224": ((14, 14), 2, 2),
    "deit3_small_patch16_224": ((14, 14), 1, 2),
}


