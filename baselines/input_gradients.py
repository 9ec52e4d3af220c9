"""The input-gradient baselines, computed by captum (not by hand): Integrated Gradients
(Sundararajan et al., ICML 2017), Input x Gradient (Shrikumar et al., 2016) and SmoothGrad
(Smilkov et al., 2017). Pixel-level maps (``resolution = "pixel"``), summed over the colour
channels.

* ``ig``: ``captum.attr.IntegratedGradients`` on the model's logit of the explained class, 50
  steps (captum's default Gauss-Legendre rule), the **zero baseline in normalised space** (the
  mean image of the data set), signed attributions summed over channels (IG's completeness:
  they add up to ``y_c(x) - y_c(0)``).
* ``ixg``: ``captum.attr.InputXGradient``, signed ``x * dy_c/dx`` summed over channels.
* ``smoothgrad``: ``captum.attr.NoiseTunnel(Saliency)`` (``nt_type="smoothgrad"``), 50 noisy
  samples, noise ``sigma = 0.15 * (max(x) - min(x))`` of each image (the paper's 15% noise level,
  per image as in the PAIR saliency code), the **absolute** gradient (captum's ``Saliency``
  default and the paper's visualisation) averaged over the samples, summed over channels (PAIR's
  ``VisualizeImageGrayscale``, without its 99th-percentile clip). captum takes one sigma for a
  whole batch; the per-image sigma comes from attributing with respect to ``u = x / r`` (``r``
  the image's range) with ``sigma = 0.15`` and a forward ``model(u * r)``, then dividing the
  gradient by ``r``. The noise comes from torch's generator seeded with ``seed`` inside a forked
  RNG state (the caller's is untouched); a batch draws other noise than single images do.

The model's own forward runs (captum adds no hooks for these three). ``steps_per_pass`` /
``samples_per_pass`` bound how many interpolated or noisy copies of each image go through the
model at once (memory); they change rounding only.
"""
from __future__ import annotations

import torch
from captum.attr import InputXGradient, IntegratedGradients, NoiseTunnel, Saliency
from torch import nn

from agcam.explainer import Explainer, class_scores
from agcam.precision import DEFAULT_PRECISION
from agcam.registry import register


class _CaptumExplainer(Explainer):
    resolution = "pixel"

    def _classes(self, images, targets):
        with torch.no_grad():
            logits = self.model(images)
        predictions, classes, _ = class_scores(logits, targets)
        return predictions, classes


@register("ig", label="Integrated Gradients")
class IntegratedGradientsExplainer(_CaptumExplainer):
    """captum's Integrated Gradients, zero (normalised) baseline, summed over channels."""

    def __init__(self, model: nn.Module, precision: str = DEFAULT_PRECISION, steps: int = 50,
                 steps_per_pass: int = 10):
        super().__init__(model, precision)
        self.steps = int(steps)
        self.steps_per_pass = int(steps_per_pass)

    def attribute(self, images, classes, return_convergence_delta: bool = False):
        """captum's attributions ``[B, 3, H, W]`` (and its convergence delta)."""
        with torch.enable_grad():
            return IntegratedGradients(self.model).attribute(
                images, baselines=torch.zeros_like(images), target=classes, n_steps=self.steps,
                internal_batch_size=images.shape[0] * self.steps_per_pass,
                return_convergence_delta=return_convergence_delta)

    def _explain(self, images, targets):
        predictions, classes = self._classes(images, targets)
        return predictions, self.attribute(images, classes).detach().sum(dim=1)


@register("ixg", label="Input×Gradient")
class InputXGradientExplainer(_CaptumExplainer):
    """captum's Input x Gradient, signed, summed over channels."""

    def _explain(self, images, targets):
        predictions, classes = self._classes(images, targets)
        with torch.enable_grad():
            inputs = images.detach().clone().requires_grad_(True)
            attributions = InputXGradient(self.model).attribute(inputs, target=classes)
        return predictions, attributions.detach().sum(dim=1)


class _Rescaled(nn.Module):
    """``u, r -> model(u * r)``: the model on images divided by their range ``r``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, u, r):
        return self.model(u * r)


@register("smoothgrad", label="SmoothGrad")
class SmoothGradExplainer(_CaptumExplainer):
    """captum's NoiseTunnel(Saliency): mean absolute gradient under noise, summed over channels."""

    def __init__(self, model: nn.Module, precision: str = DEFAULT_PRECISION, samples: int = 50,
                 noise_level: float = 0.15, seed: int = 0, samples_per_pass: int = 10):
        super().__init__(model, precision)
        self.samples = int(samples)
        self.noise_level = float(noise_level)
        self.seed = int(seed)
        self.samples_per_pass = int(samples_per_pass)

    def _explain(self, images, targets):
        predictions, classes = self._classes(images, targets)
        span = (images.amax(dim=(1, 2, 3)) - images.amin(dim=(1, 2, 3)))
        span = torch.where(span > 0, span, torch.ones_like(span))[:, None, None, None]
        devices = [images.device] if images.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), torch.enable_grad():
            torch.manual_seed(self.seed)
            tunnel = NoiseTunnel(Saliency(_Rescaled(self.model)))
            gradients = tunnel.attribute(
                (images / span).detach(), nt_type="smoothgrad", nt_samples=self.samples,
                nt_samples_batch_size=self.samples_per_pass, stdevs=self.noise_level,
                target=classes, additional_forward_args=(span,), abs=True)
        return predictions, (gradients.detach() / span).sum(dim=1)
