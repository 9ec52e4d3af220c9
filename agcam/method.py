"""Attention Guided CAM (Leem & Seo, AAAI 2024), paper Eq. 2-8.

For every block k and head h, with the class-token row of the pre-softmax scores S and of the
gradient of the class score y_c with respect to the post-softmax attention A:

    F_kh     = sigmoid(S_kh[cls, patches])            (Eq. 4: the sigmoid-normalised scores)
    alpha_kh = ReLU(d y_c / d A_kh[cls, patches])     (Eq. 5-6: the guiding gradients)
    map      = sum_k sum_h F_kh * alpha_kh            (Eq. 7-8, head then layer fusion)

As in the authors' model, every attention starts its forward with ``x = x.detach()``: y_c reaches
each attention only along the skip connections (their dE1^(k+1)/dE2^k = I). The released maps
depend on it (``tests/test_agcam.py`` shows the maps without the cut are far from them).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import nn

from agcam.explainer import Explainer, class_scores
from agcam.precision import DEFAULT_PRECISION
from agcam.registry import register
from models.attention import AttentionRecorder

FUSIONS = ("sum", "mean", "max")


def _fuse(tensor: torch.Tensor, dim: int, how: str) -> torch.Tensor:
    if how == "sum":
        return tensor.sum(dim=dim)
    if how == "mean":
        return tensor.mean(dim=dim)
    if how == "max":
        return tensor.amax(dim=dim)
    raise ValueError(f"fusion must be one of {FUSIONS}, got {how!r}")


@register("agcam", label="AGCAM", paper=True)
class AGCAM(Explainer):
    """AGCAM explainer.

    Args:
        model: a timm ViT with a class token.
        head_fusion, layer_fusion: ``sum`` (released default), ``mean`` or ``max``.
        gradient_cut: keep the released ``x.detach()`` at each attention's input (default True).
            ``False`` gives the ordinary full gradient; it departs from the released numbers and
            exists for study only.
    """

    def __init__(self, model: nn.Module, head_fusion: str = "sum", layer_fusion: str = "sum",
                 gradient_cut: bool = True, precision: str = DEFAULT_PRECISION):
        super().__init__(model, precision)
        for how in (head_fusion, layer_fusion):
            if how not in FUSIONS:
                raise ValueError(f"fusion must be one of {FUSIONS}, got {how!r}")
        self.head_fusion = head_fusion
        self.layer_fusion = layer_fusion
        self.gradient_cut = gradient_cut

    def _explain(self, images: torch.Tensor, targets: Optional[torch.Tensor]
                 ) -> Tuple[torch.Tensor, torch.Tensor]:
        rows = "cls" if self.gradient_cut else "all"
        with torch.enable_grad(), AttentionRecorder(
                self.model, detach_input=self.gradient_cut, rows=rows, keep_scores=True,
                keep_probs=False, grad=True) as recorder:
            logits = self.model(images)
            predictions, _, score = class_scores(logits, targets)
            grads = recorder.gradients(score)            # [B, L, H, R, N]
            scores = recorder.stacked("scores")          # [B, L, H, R, N]
        cols = self.patch_columns()
        F = torch.sigmoid(scores[:, :, :, 0, cols].detach())
        alpha = torch.relu(grads[:, :, :, 0, cols])
        maps = _fuse(_fuse(F * alpha, 2, self.head_fusion), 1, self.layer_fusion)
        return predictions.detach(), maps.detach()
