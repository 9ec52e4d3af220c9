"""Raw attention of the last block: the simplest attention map, class-agnostic like Rollout.

With ``A_L = softmax(S_L)`` the post-softmax attention of the last block, ``[H, N, N]``:

    map = mean_h A_L[h, cls, P]

(``cls`` the class-token row, ``P`` the patch columns; every prefix column is dropped). This is the
"raw attention" baseline of Abnar & Zuidema, "Quantifying Attention Flow in Transformers" (ACL
2020), and of Chefer, Gur & Wolf, "Transformer Interpretability Beyond Attention Visualization"
(CVPR 2021), whose Table 1-3 list it as "Raw attention".

Only the last block's attention is recorded (:class:`models.attention.AttentionRecorder` with
``blocks=[-1]``, class-token row only, no gradients); the other blocks keep timm's fused attention,
so the method costs one forward pass. A target is accepted and ignored.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from agcam.explainer import Explainer
from agcam.registry import register
from models.attention import AttentionRecorder


@register("attention", label="Raw attention")
class RawAttention(Explainer):
    """``mean_h A_L[h, cls, patches]`` of the last block (class-agnostic)."""

    class_specific = False

    def _explain(self, images: torch.Tensor, targets: Optional[torch.Tensor]
                 ) -> Tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad(), AttentionRecorder(self.model, rows="cls", keep_scores=False,
                                                grad=False, blocks=[-1]) as recorder:
            logits = self.model(images)
            attention = recorder.checked_records()[0].probs        # [B, H, 1, N]
        return logits.argmax(dim=1), attention[:, :, 0, self.patch_columns()].mean(dim=1)
