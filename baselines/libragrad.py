"""LibraGrad: Mehri, Soleymani Baghshah & Pilehvar, "LibraGrad: Balancing Gradient Flow for
Universally Better Vision Transformer Attributions" (CVPR 2025), on timm ViTs, as an option of
the gradient methods it rebalances: ``libra_ixg`` (Libra IxG) and ``libra_ig`` (Libra IG).

LibraGrad changes the backward pass only (the forward values, so the predictions, are the
model's): it prunes the backward paths that break FullGrad-completeness. On a ViT (the
authors' ``LibraGrad`` preset in ``decompv/x/gbrand.py``: gradient brand ``LX1``, as implemented
in their timm fork NightMachinery/pytorch-image-models-libragrad-v1,
``timm/night/decomposition.py``):

* LayerNorm: the variance is detached (``LineX_1``): the gradient of
  ``(x - mean) / sqrt(var + eps).detach() * w + b``;
* GELU: the gate is detached (``LineX_ZO``): the gradient of ``x * Phi(x).detach()``,
  ``Phi(x) = (1 + erf(x / sqrt 2)) / 2``;
* attention: ``q`` and ``k`` are detached (``fair_qkv``, ``LineX_1``): the attention matrix is a
  constant of the backward pass, ``A @ v`` a linear map of ``v``.

The authors' fourth rule, halving the gradient of a gating product (``DU``, gated MLPs such as
SwiGLU), has no place in a plain ViT; such models are refused (as are q/k norms, a pre-norm and
attention pooling, which no rule here reaches). The forward is :func:`models.forward.forward`
with :class:`LibraOps`; each replacement keeps the forward value exactly and swaps the gradient.

The methods then run as their plain versions (:mod:`baselines.input_gradients`, through captum) on
that forward: ``libra_ixg`` is ``x * dy_c/dx`` summed over the colour channels, ``libra_ig``
captum's Integrated Gradients (50 steps, zero baseline in normalised space), both at the input
size. Targets: the explained logit ``y_c``. (The authors' benchmark differentiates the softmax
probability of the class by default, its ``S1`` mode, for the plain and the Libra methods alike;
the logit is this project's convention for every gradient method.) Not covered: the paper's
FullGrad+ and the CAM-style methods it also rebalances.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from agcam.precision import DEFAULT_PRECISION
from agcam.registry import register
from baselines.attnlrp import AttnLRPError, check_model, layer_norm_identity, with_gradient
from baselines.input_gradients import InputXGradientExplainer, IntegratedGradientsExplainer
from models import forward


class LibraGradError(RuntimeError):
    """The model has a part the LibraGrad rules here do not cover."""


def check_activation(module: nn.Module, where: str = "") -> None:
    """``LibraGradError`` unless ``module`` is an exact GELU (the gate rule's activation)."""
    if "gelu" not in type(module).__name__.lower() or \
            getattr(module, "approximate", "none") != "none":
        raise LibraGradError(f"{where}activation {type(module).__name__}: LibraGrad's gate rule "
                             "is written for the exact GELU")


def gelu_gate_detached(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``module(x)`` with the gradient of ``x * Phi(x).detach()`` (exact GELU only)."""
    check_activation(module)
    gate = (0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))).detach()
    return with_gradient(module(x), x * gate)


class LibraOps(forward.Ops):
    """LibraGrad's backward on a ViT: LayerNorm variance, GELU gate and attention (q, k)
    detached."""

    def norm(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return layer_norm_identity(module, x)

    def act(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return gelu_gate_detached(module, x)

    def softmax(self, scores: torch.Tensor) -> torch.Tensor:
        # the scores reach only q and k: detaching them detaches q and k (``fair_qkv``)
        return scores.detach().softmax(dim=-1)


LIBRA = LibraOps()


def check_libra_model(model: nn.Module) -> None:
    """``LibraGradError`` unless every part of ``model`` has a LibraGrad rule here."""
    try:
        check_model(model)
    except AttnLRPError as error:
        raise LibraGradError(f"LibraGrad: {error}") from None
    for index, blk in enumerate(model.blocks):
        act = getattr(blk.mlp, "act", None)
        if act is not None:
            check_activation(act, f"block {index}: ")


class _Libra:
    """Mix-in: captum differentiates the model's forward with :class:`LibraOps`."""

    def _check_libra(self) -> None:
        check_libra_model(self.model)

    def forward_function(self):
        model = self.model

        def libra_forward(images: torch.Tensor) -> torch.Tensor:
            return forward.forward(model, images, ops=LIBRA)
        return libra_forward


@register("libra_ixg", label="Libra IxG")
class LibraInputXGradient(_Libra, InputXGradientExplainer):
    """Input x Gradient on LibraGrad's rebalanced backward pass."""

    def __init__(self, model: nn.Module, precision: str = DEFAULT_PRECISION):
        super().__init__(model, precision)
        self._check_libra()


@register("libra_ig", label="Libra IG")
class LibraIntegratedGradients(_Libra, IntegratedGradientsExplainer):
    """Integrated Gradients on LibraGrad's rebalanced backward pass (options as ``ig``)."""

    def __init__(self, model: nn.Module, precision: str = DEFAULT_PRECISION, **options):
        super().__init__(model, precision, **options)
        self._check_libra()
