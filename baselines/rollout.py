"""Attention Rollout (Abnar & Zuidema 2020), as jacobgil/vit-explain computes it.

With ``A_k`` the post-softmax attention of block k = 1..L, ``[B, H, N, N]`` (prefix tokens first):

1. ``M_k = mean / max / min over heads of A_k``                     (``head_fusion``)
2. per image, the ``int(N*N*discard_ratio)`` smallest entries of the flattened ``M_k`` are set
   to 0, except flat index 0 (the class token's attention to itself), which is never discarded
3. ``P_k = (M_k + I) / 2``, then ``P_k / P_k.sum(dim=-1)`` *without keepdim*: column j is divided
   by the sum of row j (``normalization="released"``)
4. ``R = P_L @ ... @ P_2 @ P_1``  (forward order)
5. map = ``R[cls, patches]`` on the patch grid

The attention is recorded by :class:`models.attention.AttentionRecorder` (unfused, no gradients)
during the one forward pass that also gives the predictions. Rollout is class-agnostic: a target
is accepted and ignored.

Departures from the released code: ``normalization="row"`` (an option) divides each row by its own
sum (``keepdim=True``), as the paper describes; with ``discard_ratio=0`` every row of ``P_k``
already sums to 1 and the two agree, with ``discard_ratio > 0`` they differ. The released code
discards and explains batch element 0 only; here every image of a batch gets its single-image
result. The map drops every prefix column (DeiT's distillation token, register tokens), not just
the first.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import torch
from torch import nn

from agcam.explainer import Explainer
from agcam.precision import DEFAULT_PRECISION
from agcam.registry import register
from models.attention import AttentionRecorder

HEAD_FUSIONS = ("mean", "max", "min")
NORMALIZATIONS = ("released", "row")


def fuse_heads(attention: torch.Tensor, how: str) -> torch.Tensor:
    """``[B, H, N, N] -> [B, N, N]``: step 1."""
    if how == "mean":
        return attention.mean(dim=1)
    if how == "max":
        return attention.amax(dim=1)
    if how == "min":
        return attention.amin(dim=1)
    raise ValueError(f"head_fusion must be one of {HEAD_FUSIONS}, got {how!r}")


def discard_lowest(fused: torch.Tensor, discard_ratio: float) -> torch.Tensor:
    """Step 2 on ``[B, N, N]`` (a new tensor; the input is not modified).

    The same ``topk(k, -1, largest=False)`` on the flattened matrix as vit-explain, so ties are
    broken the same way; index 0 is then dropped from the discard list (so at most ``k`` entries,
    ``k - 1`` when index 0 was among the smallest, are zeroed).
    """
    flat = fused.reshape(fused.shape[0], -1).clone()
    k = int(flat.shape[-1] * discard_ratio)
    if k <= 0:
        return flat.view_as(fused)
    _, indices = flat.topk(k, -1, False)
    drop = torch.zeros_like(flat, dtype=torch.bool).scatter_(1, indices, True)
    drop[:, 0] = False
    return flat.masked_fill_(drop, 0).view_as(fused)


def rollout_matrices(attentions: Union[torch.Tensor, Sequence[torch.Tensor]],
                     head_fusion: str = "mean", discard_ratio: float = 0.0,
                     normalization: str = "released") -> torch.Tensor:
    """Attentions ``[B, L, H, N, N]`` (or L tensors ``[B, H, N, N]``, first block first) -> the
    ``[B, N, N]`` rollout ``R = P_L @ ... @ P_1`` (steps 1-4)."""
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
    if isinstance(attentions, torch.Tensor):
        attentions = attentions.unbind(1)
    B, _, N, _ = attentions[0].shape
    eye = torch.eye(N, dtype=attentions[0].dtype, device=attentions[0].device)
    result = eye.expand(B, N, N)
    for attention in attentions:
        fused = discard_lowest(fuse_heads(attention, head_fusion), discard_ratio)
        a = (fused + 1.0 * eye) / 2
        if normalization == "released":
            a = a / a.sum(dim=-1)[:, None, :]   # column j / sum of row j (released quirk)
        else:
            a = a / a.sum(dim=-1, keepdim=True)
        result = torch.matmul(a, result)
    return result


@register("rollout", label="Attention Rollout", paper=True)
class Rollout(Explainer):
    """Attention Rollout explainer (class-agnostic: a target is accepted and ignored).

    Args:
        model: a timm ViT with a class token.
        head_fusion: ``mean`` (the paper), ``max`` or ``min``.
        discard_ratio: fraction of each fused matrix's entries set to 0 (the paper: 0.0).
        normalization: ``released`` (vit-explain's ``a / a.sum(dim=-1)``, the reference numbers)
            or ``row`` (proper row normalisation; differs from ``released`` only when
            ``discard_ratio > 0``).
    """

    class_specific = False

    def __init__(self, model: nn.Module, head_fusion: str = "mean", discard_ratio: float = 0.0,
                 normalization: str = "released", precision: str = DEFAULT_PRECISION):
        super().__init__(model, precision)
        if head_fusion not in HEAD_FUSIONS:
            raise ValueError(f"head_fusion must be one of {HEAD_FUSIONS}, got {head_fusion!r}")
        if not 0.0 <= discard_ratio < 1.0:
            raise ValueError(f"discard_ratio must be in [0, 1), got {discard_ratio}")
        if normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {NORMALIZATIONS}, "
                             f"got {normalization!r}")
        self.head_fusion = head_fusion
        self.discard_ratio = float(discard_ratio)
        self.normalization = normalization

    def _explain(self, images: torch.Tensor, targets: Optional[torch.Tensor]
                 ) -> Tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad(), AttentionRecorder(self.model, keep_scores=False,
                                                grad=False) as recorder:
            logits = self.model(images)
            attentions = [record.probs for record in recorder.checked_records()]  # [B, H, N, N]
            result = rollout_matrices(attentions, self.head_fusion, self.discard_ratio,
                                      self.normalization)
        return logits.argmax(dim=1), result[:, 0, self.patch_columns()]
