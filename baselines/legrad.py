"""LeGrad (Bousselham, Boggust, Chaybouti, Strobelt & Kuehne, "LeGrad: An Explainability Method
for Vision Transformers via Feature Formation Sensitivity", ICCV 2025), on a plain timm ViT.

For every selected block ``l`` (its output tokens ``z^l``, ``[B, N, C]``, and its post-softmax
attention ``A^l``, ``[B, H, N, N]``) and the explained class ``c``:

    s^l = head(final_norm(mean_n z^l_n))_c                         (the block's own class score)
    E^l = mean_{h, query rows} ReLU(d s^l / d A^l)[:, :, :, P]     (P: the patch keys)
    map = mean_l E^l                                               (on the patch grid, raw)

Each ``d s^l / d A^l`` is its own backward (the scores of later blocks also depend on ``A^l`` and
must not be added in); autograd runs only the part of the graph between ``A^l`` and ``s^l``.

Pooling. The paper applies the model's pooling and projection to every layer's tokens; for an
OpenCLIP model that is attention pooling or the class token. torchcam 0.5's ``LeGrad`` on
torchvision's ViT (a class-token model) pools by the **mean of all tokens** (prefix tokens
included) before the final LayerNorm and the head, and so does this implementation, for every
model: the mean token is handed to the model's own head (:func:`models.forward.head_forward`) as
if every token were that mean, so the class-token, distilled (DeiT: the average of both heads)
and average-pooling heads all read it, and the final norm / ``fc_norm`` apply as in the model.

Layers. The paper averages over all layers (the default here, ``layers=None``); the official code
(``legrad`` package, OpenCLIP only) defaults to the last two layers (``layer_index=-2``); torchcam
takes the blocks it is given. ``layers`` takes block indices (negative counts from the end).

No attention multiplies the gradients (unlike GAE or AttnLRP); the map is not normalised here (see
:mod:`agcam.maps`), where torchcam min-max normalises by default.
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import torch
from torch import nn

from agcam.explainer import Explainer, class_scores
from agcam.precision import DEFAULT_PRECISION
from agcam.registry import register
from models import forward


def block_scores(model: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """``[B, N, C]`` block output -> ``[B, classes]``: the model's final norm and head applied to
    the mean token (every pooling of identical tokens reads that token)."""
    pooled = tokens.mean(dim=1, keepdim=True).expand_as(tokens)
    return forward.head_forward(model, forward.final_norm(model, pooled))[0]


@register("legrad", label="LeGrad")
class LeGrad(Explainer):
    """LeGrad: positive gradients of each layer's class score w.r.t. its attention, averaged."""

    needs_class_token = False   # the mean token through the model's own pooling and head

    def __init__(self, model: nn.Module, precision: str = DEFAULT_PRECISION,
                 layers: Optional[Sequence[int]] = None):
        """``layers``: block indices to average (default all, as the paper)."""
        super().__init__(model, precision)
        depth = len(self.model.blocks)
        if layers is None:
            self.layers: List[int] = list(range(depth))
        else:
            chosen = [int(i) for i in layers]
            if not chosen or any(not -depth <= i < depth for i in chosen):
                raise ValueError(f"layers must be block indices in [-{depth}, {depth}), "
                                 f"got {list(layers)}")
            self.layers = sorted({i % depth for i in chosen})
        for index, blk in enumerate(self.model.blocks):
            forward.check_block(blk, index)

    def _explain(self, images, targets):
        # The images carry the graph, so the attentions have gradients even for frozen weights.
        x = images.detach().clone().requires_grad_(True)
        tapes: List[dict] = []
        with torch.enable_grad():
            logits = forward.forward(self.model, x, tapes=tapes)
            predictions, classes, _ = class_scores(logits, targets)
            maps = []
            for layer in self.layers:
                tape = tapes[layer]
                score = block_scores(self.model, tape["x_out"]).gather(1, classes[:, None]).sum()
                (grad,) = torch.autograd.grad(score, tape["attn"], retain_graph=True)
                maps.append(grad.clamp(min=0).mean(dim=(1, 2))[:, self.patch_columns()])
        return predictions.detach(), torch.stack(maps).mean(dim=0)
