"""AttnLRP (Achtibat et al., ICML 2024) and CP-LRP (Ali et al., ICML 2022), in the gradient x input
form of the authors' package ``lxt`` 2.x ("efficient" rules), on a plain timm ViT.

LRP in gradient x input form: the forward is the model's own (:func:`models.forward.forward`)
with some operations' *gradients* replaced (:class:`models.forward.Ops`), so that one ordinary
backward pass from the explained logit ``y_c`` gives ``x * dy_c/dx`` equal to the LRP relevance of
every input. The values of the forward are unchanged (each replacement keeps the exact forward
value and swaps only the gradient), so the predictions are the model's. The rules:

* linear layers (patch embedding, qkv, proj, fc1, fc2, head), layer scale, the residual sums and
  the class-token pooling: the plain gradient, which is the epsilon rule with epsilon = 0; a bias
  (and the class token and the position embedding) keeps its share of the relevance;
* LayerNorm (``norm1``, ``norm2``, the final norm, ``fc_norm``): ``(x - mean) / std * w + b``
  with ``std`` detached: the identity rule on ``1/std`` (AttnLRP Prop. 3.4), the epsilon rule on
  the centering (lxt's ``layer_norm_forward``);
* the MLP's activation (GELU): the identity rule (AttnLRP Eq. 9), gradient ``f(x) / (x + 1e-10)``
  (lxt's ``identity_rule_implicit``, with its epsilon 1e-10);
* AttnLRP only: softmax, the plain gradient: in gradient x input form this *is* the rule of
  AttnLRP's Prop. 3.1, ``R_in = x * (R_out - s * sum(R_out))`` (Deep Taylor at x, bias omitted);
  ``q @ k^T`` and ``A @ v``: the uniform rule (Eq. 7), the gradient halved at each operand of
  each product, so q and k receive 1/4 and v 1/2 (lxt's ``divide_gradient`` on q, k, v);
* CP-LRP only: ``q`` and ``k`` detached, so the attention matrix is a constant and ``A @ v`` a
  linear map of v (lxt's ``cp_multi_head_attention_forward``, the ``vit_torch.cp_LRP`` recipe).

The heatmap is ``x * dy_c/dx`` summed over the colour channels, at the input size
(``level="pixel"``, the default). ``level="patch"`` sums it over each patch instead (maps on the
patch grid: the relevance of each patch's pixels).

Relation to lxt's ViT recipe (``lxt/efficient/models/vit_torch.py`` + zennit): lxt applies
zennit's Gamma rule to the ``nn.Linear``/``nn.Conv2d`` modules; with gamma = 0 that is the
epsilon rule with zennit's stabiliser (1e-6) instead of 0. The fixture
``tests/fixtures/reference_packages`` holds lxt's maps with gamma = 0 on a torchvision ViT with
the same weights; ``tests/test_attnlrp.py`` compares them.

Not covered (``AttnLRPError``): gated MLPs (SwiGLU: their product needs the uniform rule too),
attention pooling (``attn_pool``), and norms other than LayerNorm or extra norms (``norm_pre``,
q/k norms, the attention's and the MLP's inner norms) that the ops above do not reach.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import nn

from agcam.explainer import Explainer, class_scores
from agcam.precision import DEFAULT_PRECISION
from agcam.registry import register
from models import forward

#: lxt's epsilon in the identity rule of the activation, ``f(x) / (x + 1e-10)``
IDENTITY_EPSILON = 1e-10


class AttnLRPError(RuntimeError):
    """The model has a part the AttnLRP/CP-LRP rules here do not cover."""


def with_gradient(value: torch.Tensor, surrogate: torch.Tensor) -> torch.Tensor:
    """``value``'s numbers with ``surrogate``'s gradient (``surrogate - surrogate`` adds exact
    zeros)."""
    return value.detach() + (surrogate - surrogate.detach())


def half_gradient(x: torch.Tensor) -> torch.Tensor:
    """``x`` unchanged (``x/2 + x/2`` is exact), its gradient halved: the uniform rule of one
    operand of a product."""
    half = 0.5 * x
    return half + half.detach()


def layer_norm_identity(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``module(x)`` with the gradient of ``(x - mean) / std * w + b``, ``std`` detached (an
    ``nn.Identity``, the final norm of an average-pooling model, stays one)."""
    if isinstance(module, nn.Identity):
        return x
    if not isinstance(module, nn.LayerNorm):
        raise AttnLRPError(f"{type(module).__name__}: the LRP rules here cover LayerNorm only")
    mean = x.mean(dim=-1, keepdim=True)
    centered = x - mean
    std = (centered.pow(2).mean(dim=-1, keepdim=True) + module.eps).sqrt().detach()
    surrogate = centered / std
    if module.weight is not None:
        surrogate = surrogate * module.weight
    if module.bias is not None:
        surrogate = surrogate + module.bias
    return with_gradient(module(x), surrogate)


def activation_identity(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``module(x)`` with the gradient ``module(x) / (x + 1e-10)`` (the identity rule)."""
    y = module(x)
    ratio = (y / (x + IDENTITY_EPSILON)).detach()
    return y.detach() + (x - x.detach()) * ratio


class AttnLRPOps(forward.Ops):
    """AttnLRP's gradients: LayerNorm and activation identity rules, plain softmax (Prop. 3.1),
    the uniform rule at both attention products."""

    def norm(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return layer_norm_identity(module, x)

    def act(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return activation_identity(module, x)

    def matmul(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return half_gradient(a) @ half_gradient(b)


class CPLRPOps(AttnLRPOps):
    """CP-LRP's gradients: as AttnLRP, but the attention is a constant (q and k detached; only
    q and k reach the softmax), so ``A @ v`` is a plain linear map of ``v``."""

    def softmax(self, scores: torch.Tensor) -> torch.Tensor:
        return scores.detach().softmax(dim=-1)

    def matmul(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a @ b


def check_model(model: nn.Module) -> None:
    """``AttnLRPError`` unless every part of ``model`` has a rule here."""
    if not isinstance(getattr(model, "norm_pre", nn.Identity()), nn.Identity):
        raise AttnLRPError("the model has a pre-norm (norm_pre) that the LRP rules do not reach")
    if getattr(model, "attn_pool", None) is not None:
        raise AttnLRPError("attention pooling (attn_pool): its attention, norm and MLP have no "
                           "rule here")
    for index, blk in enumerate(model.blocks):
        forward.check_block(blk, index)
        for owner, name in ((blk.attn, "q_norm"), (blk.attn, "k_norm"), (blk.attn, "norm"),
                            (blk.mlp, "norm")):
            part = getattr(owner, name, None)
            if part is not None and not isinstance(part, nn.Identity):
                raise AttnLRPError(f"block {index}: {name} is {type(part).__name__}; the LRP "
                                   "rules here cover no norm there")
        if getattr(blk.mlp, "chunk_dim", None) is not None:
            raise AttnLRPError(f"block {index}: a gated MLP; its product would need the uniform "
                               "rule, which is not written here")


def gradient_times_input(model: nn.Module, images: torch.Tensor, targets: Optional[torch.Tensor],
                         ops: forward.Ops) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(predictions, x * dy_c/dx)``: one forward with ``ops`` and one backward from the summed
    explained logits (each image's logit depends on that image only)."""
    x = images.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        logits = forward.forward(model, x, ops=ops)
        predictions, _, score = class_scores(logits, targets)
        (grad,) = torch.autograd.grad(score, x)
    return predictions, x.detach() * grad


class _GradientInputLRP(Explainer):
    resolution = "pixel"
    precisions = ("fp32", "tf32")
    refusal = ("the identity rule divides by the activation's input (x + 1e-10) and the uniform "
               "rule relies on exact halving; bf16 relevances are not LRP's")
    ops: forward.Ops = AttnLRPOps()

    def __init__(self, model: nn.Module, precision: str = DEFAULT_PRECISION,
                 level: str = "pixel"):
        """``level``: ``"pixel"`` (maps at the input size) or ``"patch"`` (each patch's pixels
        summed: maps on the patch grid)."""
        super().__init__(model, precision)
        if level not in ("pixel", "patch"):
            raise ValueError(f"level must be 'pixel' or 'patch', not {level!r}")
        check_model(self.model)
        self.patch_level = level == "patch"
        self.resolution = level

    def _explain(self, images, targets):
        predictions, relevance = gradient_times_input(self.model, images, targets, self.ops)
        maps = relevance.sum(dim=1)                                        # [B, H, W]
        if self.patch_level:
            gh, gw = self.geometry.grid
            ph, pw = self.model.patch_embed.patch_size
            maps = maps[:, :gh * ph, :gw * pw].reshape(-1, gh, ph, gw, pw).sum(dim=(2, 4))
        return predictions, maps


@register("attnlrp", label="AttnLRP")
class AttnLRP(_GradientInputLRP):
    """AttnLRP (lxt 2.x efficient rules), pixel-level ``x * dy_c/dx`` summed over channels."""

    ops = AttnLRPOps()


@register("cplrp", label="CP-LRP")
class CPLRP(_GradientInputLRP):
    """CP-LRP: AttnLRP's rules with the attention held constant (lxt's ViT recipe)."""

    ops = CPLRPOps()
