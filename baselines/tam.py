"""Transition Attention Maps (TAM): Yuan, Li, Wu, Zhang, Yu & Xue, "Explaining Information Flow
Inside Vision Transformers Using Markov Chain" (NeurIPS 2021 XAI4Debugging workshop), as the
authors' code computes it (``XianrenYty/Transition_Attention_Maps``,
``baselines/ViT/interpret_methods.py``, ``transition_attention_maps``).

With ``Abar_k = mean_h A_k`` the head-averaged post-softmax attention of block k (``[N, N]``,
prefix tokens first), ``L`` blocks, ``c`` the class row and ``y_c`` the explained logit:

    s = Abar_L[c]                                            (the last block's class row)
    for k = L-1, ..., start_layer + 1:   s = s @ Abar_k + s  (the Markov chain, residual kept)
    W = mean_h max(0, (1/m) sum_{j<m} dy_c/dA_L (x * j/(m-1)))[c]   (integrated gradient)
    map = (s * W)[P]

(blocks counted from 1 here; in the code ``range(start_layer, num_blocks - 1)[::-1]``, 0-based, so
the block of 0-based index ``start_layer`` is the first one multiplied in). ``m = steps``
points ``alpha = linspace(0, 1, steps)`` scale the normalised input (``alpha = 0``: the zero
image, i.e. the data set's mean image); the explained class is the prediction on the unscaled
input. ``P`` are the patch columns (every prefix column dropped; the authors' code drops the
class token only, their ViT has no other). Options are the authors' defaults: ``start_layer=4``,
``steps=20``, ``with_integral=True`` (``False``: the gradient at the input alone, one backward),
``first_state=False`` (``True``: ``s`` is the last block's class row alone).

One forward pass at the input records every attention; each integration step is one forward
and one backward of the batch (each image's logit depends on that image only, so a batch gives
every image its own gradient).

The helpers :func:`attention_tapes` and :func:`integrated_last_attention_gradient` are shared
with Beyond Intuition (:mod:`baselines.beyond_intuition`), which adopted TAM's integrated
gradient of the last attention.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

from agcam.explainer import Explainer, class_scores
from agcam.precision import DEFAULT_PRECISION
from agcam.registry import register
from models import forward


def attention_tapes(model: nn.Module, images: torch.Tensor, targets: Optional[torch.Tensor],
                    gradients: bool = False
                    ) -> Tuple[torch.Tensor, torch.Tensor, List[Dict[str, torch.Tensor]],
                               Optional[List[torch.Tensor]]]:
    """One written-out forward (:func:`models.forward.forward`) at ``images``:
    ``(predictions, classes, tapes, grads)``, one tape per block (``attn``, ``x_in``, ``v``, ...,
    detached) and, with ``gradients``, every block's ``dy_c/dA``, ``[B, H, N, N]``."""
    x = images.detach().clone().requires_grad_(gradients)
    tapes: List[Dict[str, torch.Tensor]] = []
    with torch.set_grad_enabled(gradients):
        logits = forward.forward(model, x, tapes=tapes)
        predictions, classes, score = class_scores(logits, targets)
        grads = None
        if gradients:
            grads = list(torch.autograd.grad(score, [t["attn"] for t in tapes]))
    tapes = [{k: v.detach() for k, v in tape.items()} for tape in tapes]
    return predictions.detach(), classes, tapes, grads


def integrated_last_attention_gradient(model: nn.Module, images: torch.Tensor,
                                       classes: torch.Tensor, steps: int) -> torch.Tensor:
    """``(1/steps) sum_alpha dy_c/dA_L(alpha * images)`` over ``alpha = linspace(0, 1, steps)``
    (the authors' ``np.linspace``, both ends included): ``[B, H, N, N]``."""
    total = None
    for alpha in torch.linspace(0, 1, steps, dtype=torch.float64).tolist():
        x = (images * alpha).detach().requires_grad_(True)
        tapes: List[Dict[str, torch.Tensor]] = []
        with torch.enable_grad():
            logits = forward.forward(model, x, tapes=tapes)
            score = logits.gather(1, classes[:, None]).sum()
            (grad,) = torch.autograd.grad(score, tapes[-1]["attn"])
        total = grad if total is None else total + grad
    return total / steps


def check_start_layer(start_layer: int, depth: int, name: str) -> int:
    """``ValueError`` unless ``0 <= start_layer <= depth``."""
    start_layer = int(start_layer)
    if not 0 <= start_layer <= depth:
        raise ValueError(f"{name}: start_layer must be in [0, {depth}] for a {depth}-block "
                         f"model, got {start_layer}")
    return start_layer


@register("tam", label="TAM")
class TransitionAttentionMaps(Explainer):
    """TAM: the Markov chain of head-averaged attentions, weighted by the integrated gradient of
    the last attention."""

    def __init__(self, model: nn.Module, precision: str = DEFAULT_PRECISION, start_layer: int = 4,
                 steps: int = 20, with_integral: bool = True, first_state: bool = False):
        """``start_layer``: 0-based index of the first block in the chain (authors: 4);
        ``steps``: integration points (20); ``with_integral``, ``first_state``: see the module
        docstring."""
        super().__init__(model, precision)
        for index, blk in enumerate(self.model.blocks):
            forward.check_block(blk, index)
        self.start_layer = check_start_layer(start_layer, len(self.model.blocks), "tam")
        if int(steps) < 2 and with_integral:
            raise ValueError(f"tam: steps must be at least 2 (linspace(0, 1, steps)), got {steps}")
        self.steps = int(steps)
        self.with_integral = bool(with_integral)
        self.first_state = bool(first_state)

    def _explain(self, images, targets):
        predictions, classes, tapes, _ = attention_tapes(self.model, images, targets)
        mean_attn = [t["attn"].mean(dim=1) for t in tapes]                    # L x [B, N, N]
        states = mean_attn[-1][:, :1]                                         # [B, 1, N]
        if not self.first_state:
            for k in reversed(range(self.start_layer, len(tapes) - 1)):
                states = torch.matmul(states, mean_attn[k]) + states
        if self.with_integral:
            grad = integrated_last_attention_gradient(self.model, images, classes, self.steps)
        else:
            grad = attention_tapes(self.model, images, classes, gradients=True)[3][-1]
        weight = grad.clamp(min=0).mean(dim=1)[:, :1]                         # [B, 1, N]
        return predictions, (states * weight)[:, 0, self.patch_columns()]
