"""Beyond Intuition: Chen, Li, Zhang & Yuan, "Beyond Intuition: Rethinking Token Attributions
inside Transformers" (TMLR 2023), head-wise (BT-H, ``bt_h``) and token-wise (BT-T, ``bt_t``), as the
authors' ViT code computes them (``jiaminchen-1031/transformerinterp``,
``ViT/baselines/ViT/ViT_explanation_generator.py``: ``generate_ours``, ``generate_ours_c``).

Attention perception (from the block of 0-based index ``start_layer - 1`` to the last; the
authors' ``if nb < start_layer - 1: continue``), ``R = I_N`` then per block k, with ``A_k`` its
post-softmax attention ``[H, N, N]`` and ``G_k = dy_c/dA_k`` at the input:

* BT-H: ``I_h = mean_{i,j} |A_kh^T G_kh|``, normalised to sum 1 over heads;
  ``R = R + (sum_h I_h A_kh) @ R``;
* BT-T: ``z`` the block's input tokens, ``v`` the values (all heads concatenated), ``W_o`` the
  attention's output projection (no bias, no layer scale: the authors' ``vproj``);
  ``D = diag(||v_n W_o^T|| / ||z_n||)`` per token n; ``R = R + (mean_h A_kh) @ D @ R``.

Reasoning feedback: ``W = mean_h max(0, mean_alpha dy_c/dA_L(alpha x))`` over
``alpha = linspace(0, 1, steps)`` (TAM's integrated gradient of the last attention, shared with
:mod:`baselines.tam`); ``map = (W * R)[c, P]`` for BT-H and ``(W * |R|)[c, P]`` for BT-T (``c``
the class row, ``P`` the patch columns: every prefix column dropped).

Defaults are the authors' ViT experiments (``generate_visualizations.py``, the perturbation
test): ``steps=20``; ``start_layer=4`` (BT-H) and ``7`` (BT-T; the function's own default is 6).
The released functions also take ``samples=20`` and ``noise=0.2``, which their bodies never read
(the SmoothGrad variant that would use them is commented out), so they are not options here.

Batches: the released code runs one image at a time (its head weights ``I_h`` are normalised over
the whole flattened batch x heads); here each image is normalised over its own heads, which is the
released computation for every single image. A model with fewer blocks than ``start_layer - 1``
(the 4-block golden model, BT-T's 7) keeps its last block in the perception, where the released
loop would keep none and return an all-zero map.
"""
from __future__ import annotations

import torch
from torch import nn

from agcam.explainer import Explainer
from agcam.precision import DEFAULT_PRECISION
from agcam.registry import register
from baselines.tam import attention_tapes, integrated_last_attention_gradient
from models import forward


def head_weights(attention: torch.Tensor, gradient: torch.Tensor) -> torch.Tensor:
    """BT-H's ``I_h``: ``mean_{i,j} |A_h^T G_h|`` normalised over heads, ``[B, H]``."""
    weights = torch.matmul(attention.transpose(-1, -2), gradient).abs().mean(dim=(-1, -2))
    return weights / weights.sum(dim=1, keepdim=True)


def token_scales(attn: nn.Module, block_input: torch.Tensor, values: torch.Tensor
                 ) -> torch.Tensor:
    """BT-T's ``||v_n W_o^T|| / ||z_n||`` per token, ``[B, N]`` (values ``[B, H, N, d]``)."""
    B, H, N, d = values.shape
    heads = values.transpose(1, 2).reshape(B, N, H * d)
    projected = torch.matmul(heads, attn.proj.weight.detach().t())
    return projected.norm(dim=-1) / block_input.norm(dim=-1)


class _BeyondIntuition(Explainer):
    default_start_layer = 4

    def __init__(self, model: nn.Module, precision: str = DEFAULT_PRECISION,
                 start_layer: int = None, steps: int = 20):
        """``start_layer``: blocks from 0-based index ``start_layer - 1`` on enter the perception
        (BT-H: 4, BT-T: 7, the authors' ViT runs); ``steps``: integration points (20)."""
        super().__init__(model, precision)
        for index, blk in enumerate(self.model.blocks):
            forward.check_block(blk, index)
        if start_layer is None:
            start_layer = self.default_start_layer
        depth = len(self.model.blocks)
        self.start_layer = int(start_layer)
        if self.start_layer < 0:
            raise ValueError(f"{self.name}: start_layer must be >= 0, got {start_layer}")
        # A model with fewer blocks than the start layer keeps its last block (the released
        # loop would keep none, R = I, and give an all-zero map).
        self.first_block = min(max(self.start_layer - 1, 0), depth - 1)
        if int(steps) < 2:
            raise ValueError(f"{self.name}: steps must be at least 2, got {steps}")
        self.steps = int(steps)

    def _perception(self, tapes, grads) -> torch.Tensor:
        raise NotImplementedError

    def _explain(self, images, targets):
        predictions, classes, tapes, grads = attention_tapes(self.model, images, targets,
                                                             gradients=not self.token_wise)
        B, _, N, _ = tapes[0]["attn"].shape
        R = torch.eye(N, dtype=images.dtype, device=images.device).expand(B, N, N)
        for k in range(self.first_block, len(tapes)):
            attention = tapes[k]["attn"]
            if self.token_wise:
                scales = token_scales(self.model.blocks[k].attn, tapes[k]["x_in"], tapes[k]["v"])
                mixed = attention.mean(dim=1) * scales[:, None, :]       # Abar @ diag(scales)
            else:
                mixed = torch.einsum("bh,bhij->bij", head_weights(attention, grads[k]), attention)
            R = R + torch.matmul(mixed, R)
        grad = integrated_last_attention_gradient(self.model, images, classes, self.steps)
        weight = grad.clamp(min=0).mean(dim=1)                           # [B, N, N]
        relevance = weight * (R.abs() if self.token_wise else R)
        return predictions, relevance[:, 0, self.patch_columns()]


@register("bt_h", label="BT-H")
class BeyondIntuitionHeadWise(_BeyondIntuition):
    """Beyond Intuition, head-wise: gradient-weighted heads, integrated last-attention gradient."""

    token_wise = False
    default_start_layer = 4


@register("bt_t", label="BT-T")
class BeyondIntuitionTokenWise(_BeyondIntuition):
    """Beyond Intuition, token-wise: value-norm ratios per token, integrated last-attention
    gradient."""

    token_wise = True
    default_start_layer = 7
