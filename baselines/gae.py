"""Generic Attention-model Explainability (GAE): Chefer, Gur & Wolf, "Generic Attention-model
Explainability for Interpreting Bi-Modal and Encoder-Decoder Transformers" (ICCV 2021), the
self-attention rules (their Eq. 5-6) as their ViT code applies them.

With ``y_c`` the class logit and ``A_k = softmax(S_k)`` the post-softmax attention of block k,
``[H, N, N]`` (prefix tokens first), and the full gradient (no AGCAM cut):

    R = I_N
    for k = 1..L:   Abar_k = mean_h max(dy_c/dA_k ⊙ A_k, 0)       (Eq. 5)
                    R      = R + Abar_k @ R                      (Eq. 6)
    map = R[cls, P]

(``cls`` the class-token row, ``P`` the patch columns; every prefix column is dropped, where the
authors' code drops the first only). One forward pass records every block's attention
(:class:`models.attention.AttentionRecorder`, all rows, ``dy/dA`` of the full graph) and one
backward pass gives every ``dy_c/dA_k``; a batch gives each image its own gradient.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch

from agcam.explainer import Explainer, class_scores
from agcam.registry import register
from models.attention import AttentionRecorder


def self_attention_relevance(attentions: Sequence[torch.Tensor],
                             gradients: Sequence[torch.Tensor]) -> torch.Tensor:
    """Eq. 5-6: per block (first block first) the attention and its gradient, ``[B, H, N, N]``
    each (or ``[B, L, H, N, N]`` tensors) -> the ``[B, N, N]`` relevance ``R``."""
    if isinstance(attentions, torch.Tensor):
        attentions, gradients = attentions.unbind(1), gradients.unbind(1)
    B, _, N, _ = attentions[0].shape
    R = torch.eye(N, dtype=attentions[0].dtype, device=attentions[0].device).expand(B, N, N)
    for attention, gradient in zip(attentions, gradients):
        fused = (gradient * attention).clamp(min=0).mean(dim=1)           # Abar_k, [B, N, N]
        R = R + torch.matmul(fused, R)
    return R


@register("gae", label="GAE")
class GenericAttentionExplainability(Explainer):
    """GAE explainer (Chefer et al., ICCV 2021): gradient-weighted attention, accumulated."""

    def _explain(self, images: torch.Tensor, targets: Optional[torch.Tensor]
                 ) -> Tuple[torch.Tensor, torch.Tensor]:
        with torch.enable_grad(), AttentionRecorder(self.model, rows="all", keep_scores=False,
                                                    grad=True) as recorder:
            logits = self.model(images)
            predictions, _, score = class_scores(logits, targets)
            gradients = recorder.gradient_list(score)              # L x [B, H, N, N]
            attentions = [r.probs.detach() for r in recorder.checked_records()]
        R = self_attention_relevance(attentions, gradients)
        return predictions.detach(), R[:, 0, self.patch_columns()]
