"""Grad-CAM for Vision Transformers, two ways: on the last block's attention (``gradcam``) and on
the last block's token features (``gradcam_tokens``).

``y_c`` is the class logit, ``cls`` the class-token row, ``P`` the patch columns (every prefix
token dropped); every gradient is the full gradient (no AGCAM cut). Both cost one forward and one
backward pass; a batch gives each image its own gradient.

``gradcam``: Grad-CAM on the attention of the last block, the baseline of Chefer, Gur & Wolf,
"Transformer Interpretability Beyond Attention Visualization" (CVPR 2021; their code's
``generate_attn_gradcam``). With ``A_L = softmax(S_L)``, ``[H, N, N]``::

    w_h = mean_{p in P} dy_c/dA_L[h, cls, p]
    map = ReLU(mean_h w_h * A_L[h, cls, P])

``gradcam_tokens``: Grad-CAM (Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks
via Gradient-based Localization", ICCV 2017) on token features, as pytorch-grad-cam (the
``grad-cam`` package) applies it to ViTs with its documented ``reshape_transform``: the target
layer is the last block's ``norm1``, whose output ``[N, D]`` drops the prefix tokens and is read
as ``D`` feature maps ``F_d`` on the patch grid::

    w_d = mean_{p in P} dy_c/dF_d[p]
    map = ReLU(sum_d w_d * F_d)

This is the package's ``GradCAM`` before its own min-max scaling and resizing (here
:mod:`agcam.maps` does those for every method alike). The features are taken by a forward hook on
``norm1`` that exists only during the call (removed in ``finally``).
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
from torch import nn

from agcam.explainer import Explainer, class_scores
from agcam.precision import DEFAULT_PRECISION
from agcam.registry import register
from models.attention import AttentionRecorder


class GradCAMError(ValueError):
    """The model has no layer Grad-CAM on tokens can read (no ``blocks[-1].norm1``)."""


@register("gradcam", label="Grad-CAM (attention)")
class AttentionGradCAM(Explainer):
    """Grad-CAM on the last block's attention (Chefer et al.'s baseline)."""

    def _explain(self, images: torch.Tensor, targets: Optional[torch.Tensor]
                 ) -> Tuple[torch.Tensor, torch.Tensor]:
        cols = self.patch_columns()
        with torch.enable_grad(), AttentionRecorder(self.model, rows="all", keep_scores=False,
                                                    grad=True, blocks=[-1]) as recorder:
            logits = self.model(images)
            predictions, _, score = class_scores(logits, targets)
            gradient = recorder.gradient_list(score)[0][:, :, 0, cols]          # [B, H, P]
            attention = recorder.checked_records()[0].probs[:, :, 0, cols].detach()
        weights = gradient.mean(dim=-1, keepdim=True)                          # w_h, [B, H, 1]
        maps = torch.relu((weights * attention).mean(dim=1))
        return predictions.detach(), maps


@register("gradcam_tokens", label="Grad-CAM (tokens)")
class TokenGradCAM(Explainer):
    """Grad-CAM on the last block's ``norm1`` output (pytorch-grad-cam's ViT recipe)."""

    needs_class_token = False   # the patch tokens' features and gradients

    def __init__(self, model: nn.Module, precision: str = DEFAULT_PRECISION):
        super().__init__(model, precision)
        blocks = getattr(self.model, "blocks", None)
        self.layer = getattr(blocks[-1], "norm1", None) if blocks else None
        if not isinstance(self.layer, nn.Module):
            raise GradCAMError(f"{type(self.model).__name__} has no blocks[-1].norm1; Grad-CAM on "
                               "tokens needs a timm Vision Transformer")

    def _explain(self, images: torch.Tensor, targets: Optional[torch.Tensor]
                 ) -> Tuple[torch.Tensor, torch.Tensor]:
        seen: Dict[str, torch.Tensor] = {}

        def keep_features(module, inputs, output):
            # A leaf with the same values: dy/dF is the full gradient, and the backward pass
            # stops here instead of running through the earlier blocks.
            seen["features"] = output.detach().requires_grad_(True)
            return seen["features"]

        handle = self.layer.register_forward_hook(keep_features)
        try:
            with torch.enable_grad():
                logits = self.model(images)
                predictions, _, score = class_scores(logits, targets)
                if "features" not in seen:
                    raise GradCAMError("blocks[-1].norm1 was not called by the model's forward")
                features = seen["features"]
                (gradient,) = torch.autograd.grad(score, features)
        finally:
            handle.remove()
        cols = self.patch_columns()
        weights = gradient[:, cols].mean(dim=1, keepdim=True)                  # w_d, [B, 1, D]
        maps = torch.relu((weights * features.detach()[:, cols]).sum(dim=-1))  # [B, P]
        return predictions.detach(), maps
