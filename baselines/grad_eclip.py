"""Grad-ECLIP (Zhao, Wang, Zeng, Zhao & Chan, "Gradient-based Visual Explanation for CLIP",
ICML 2024), as the authors' evaluation code computes it (Cyang-Zhao/Grad-Eclip,
``generate_emap.py``: ``clip_encode_dense`` and ``grad_eclip``).

On the last block, with ``q, k, v`` its queries, keys and values (``[N, C]``, heads merged),
``o = A v`` its attention output before the output projection and ``c`` the explained score:

    g      = d c / d o_cls                                   (channel weights, [C])
    s_i    = cos(W_o q_cls + b_o, W_o k_i + b_o)             (spatial weights, patches i)
    s      = (s - min s) / (max s - min s)
    map_i  = ReLU(sum_ch g_ch v_i,ch s_i)

The authors recompute the last block's attention with one head over the full width (scale
``C^-1/2``, their ``attention_layer(q, k, v, 1)``) and take ``c`` from that forward; this is the
default (``single_head=True``); ``single_head=False`` keeps the model's own heads, so ``c`` is the
model's logit. The predictions are the model's own (its unmodified last block). ``c`` here is the
classifier's logit: on a zero-shot head (:func:`agcam.clip.zero_shot`) ``logit_scale`` times the
authors' cosine, so the map is ``logit_scale`` times theirs (their display min-max normalises).
``ksim=False`` drops the spatial weights (their "wo-ksim" variant). The authors' notebook
(``grad_eclip_image.ipynb``) takes the cosine of the raw ``q`` and ``k``; their evaluation
scripts, followed here, of ``q`` and ``k`` through the output projection. Verified against the
authors' functions in float64 (tests/test_clip_methods.py).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from agcam.explainer import Explainer, class_scores
from agcam.precision import DEFAULT_PRECISION
from agcam.registry import register
from models import forward


def _merge(t: torch.Tensor) -> torch.Tensor:
    """``[B, H, N, d] -> [B, N, H*d]`` (head-major channels, as the fused projections)."""
    B, H, N, d = t.shape
    return t.transpose(1, 2).reshape(B, N, H * d)


@register("grad_eclip", label="Grad-ECLIP")
class GradECLIP(Explainer):
    """Grad-ECLIP: the class-token gradient on the last attention output, times the values and
    the query-key cosine."""

    def __init__(self, model: nn.Module, precision: str = DEFAULT_PRECISION,
                 single_head: bool = True, ksim: bool = True):
        super().__init__(model, precision)
        self.single_head, self.ksim = bool(single_head), bool(ksim)
        for index, blk in enumerate(self.model.blocks):
            forward.check_block(blk, index)

    def _last_block(self, blk: nn.Module, x: torch.Tensor):
        """The last block as the authors recompute it: ``(output tokens, o, q, k, v)``."""
        attn = blk.attn
        h1 = blk.norm1(x)
        gate, q, k, v = forward.project_qkv(attn, h1)
        if self.single_head:
            qm, km, vm = _merge(q)[:, None], _merge(k)[:, None], _merge(v)[:, None]
            probs = ((qm * qm.shape[-1] ** -0.5) @ km.transpose(-2, -1)).softmax(dim=-1)
            heads = probs @ vm                                  # [B, 1, N, C]
        else:
            probs = forward.attention_scores(attn, q, k).softmax(dim=-1)
            heads = probs @ v                                   # [B, H, N, d]
        out = forward.project_out(attn, heads, gate)
        x = forward.mlp_residual(blk, forward.attention_residual(blk, x, out))
        return x, heads, _merge(q), _merge(k), _merge(v)

    def _explain(self, images: torch.Tensor, targets: Optional[torch.Tensor]
                 ) -> Tuple[torch.Tensor, torch.Tensor]:
        model = self.model
        *body, last = list(model.blocks)
        with torch.enable_grad():
            x = forward.embed(model, images)
            for blk in body:
                x = forward.block_forward(blk, x)
            with torch.no_grad():       # the model's own prediction (its unmodified last block)
                true_logits = forward.head_forward(
                    model, forward.final_norm(model, forward.block_forward(last, x)))[0]
            tokens, heads, q, k, v = self._last_block(last, x)
            logits = forward.head_forward(model, forward.final_norm(model, tokens))[0]
            predictions = true_logits.argmax(dim=1)
            classes = predictions if targets is None else targets
            _, _, score = class_scores(logits, classes)
            (grad,) = torch.autograd.grad(score, heads)
        g = _merge(grad)[:, 0]                                  # [B, C]: d c / d o_cls
        patches = self.patch_columns()
        weights = (g[:, None] * v[:, patches]).sum(-1)          # [B, P]
        if self.ksim:
            proj = last.attn.proj
            cosine = (F.normalize(proj(q[:, :1]), dim=-1) *
                      F.normalize(proj(k[:, patches]), dim=-1)).sum(-1)
            low = cosine.min(dim=1, keepdim=True).values
            high = cosine.max(dim=1, keepdim=True).values
            weights = weights * (cosine - low) / (high - low)
        return predictions.detach(), weights.clamp(min=0).detach()
