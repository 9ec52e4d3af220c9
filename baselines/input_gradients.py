"""The input-gradient baselines, computed by captum (not by hand): Integrated Gradients
(Sundararajan et al., ICML 2017), Input x Gradient (Shrikumar et al., 2016) and SmoothGrad
(Smilkov et al., 2017). Pixel-level maps (``resolution = "pixel"``), summed over the colour
channels.

* ``ig``: ``captum.attr.IntegratedGradients`` on the model's logit of the explained class, 50
  steps (captum's default Gauss-Legendre rule), the **zero baseline in normalised space** (the
  mean image of the data set; ``baseline`` sets another constant, or a tensor), signed
  attributions summed over channels (IG's completeness: they add up to ``y_c(x) - y_c(b)``).
* ``ixg``: ``captum.attr.InputXGradient``, signed ``x * dy_c/dx`` summed over channels.
* ``smoothgrad``: ``captum.attr.NoiseTunnel(Saliency)`` (``nt_type="smoothgrad"``), 50 noisy
  samples, noise of standard deviation ``sigma * (max(x) - min(x))``, ``sigma = 0.15``, for each
  image (the paper's 15% noise level,
  per image as in the PAIR saliency code), the **absolute** gradient (captum's ``Saliency``
  default and the paper's visualisation) averaged over the samples, summed over channels (PAIR's
  ``VisualizeImageGrayscale``, without its 99th-percentile clip). Each image draws its noise
  from torch's generator seeded with ``seed`` (inside a forked RNG state: the caller's is
  untouched), so a map depends on the image and the seed only, never on its batch neighbours: a
  batch gives the single-image maps exactly. For that the images go through captum one after
  another (captum draws one noise tensor for a whole batch and takes one sigma), each with its
  noisy copies batched (``samples_per_pass`` at a time).

The model's own forward runs (captum adds no hooks for these three). ``steps_per_pass`` /
``samples_per_pass`` bound how many interpolated or noisy copies of each image go through the
model at once (memory); ``steps_per_pass`` changes rounding only, ``samples_per_pass`` also how
captum splits its noise draws (so the noise).
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
    needs_class_token = False   # gradients of the input only

    def forward_function(self):
        """What captum differentiates: the model itself (the LibraGrad variants,
        :mod:`baselines.libragrad`, give their rebalanced forward instead)."""
        return self.model

    def _classes(self, images, targets):
        with torch.no_grad():
            logits = self.model(images)
        predictions, classes, _ = class_scores(logits, targets)
        return predictions, classes


@register("ig", label="Integrated Gradients")
class IntegratedGradientsExplainer(_CaptumExplainer):
    """captum's Integrated Gradients, zero (normalised) baseline, summed over channels."""

    def __init__(self, model: nn.Module, precision: str = DEFAULT_PRECISION, steps: int = 50,
                 baseline=0.0, steps_per_pass: int = 10):
        """``baseline``: a constant in normalised space (0: the data set's mean image) or a
        tensor broadcastable to the images."""
        super().__init__(model, precision)
        self.steps = int(steps)
        self.baseline = baseline
        self.steps_per_pass = int(steps_per_pass)

    def attribute(self, images, classes, return_convergence_delta: bool = False):
        """captum's attributions ``[B, 3, H, W]`` (and its convergence delta)."""
        with torch.enable_grad():
            return IntegratedGradients(self.forward_function()).attribute(
                images, baselines=self.baselines(images), target=classes, n_steps=self.steps,
                internal_batch_size=images.shape[0] * self.steps_per_pass,
                return_convergence_delta=return_convergence_delta)

    def baselines(self, images: torch.Tensor) -> torch.Tensor:
        """The baseline images, ``[B, 3, H, W]``."""
        baseline = torch.as_tensor(self.baseline, dtype=images.dtype, device=images.device)
        return baseline.expand_as(images).clone()

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
            attributions = InputXGradient(self.forward_function()).attribute(inputs,
                                                                             target=classes)
        return predictions, attributions.detach().sum(dim=1)


@register("smoothgrad", label="SmoothGrad")
class SmoothGradExplainer(_CaptumExplainer):
    """captum's NoiseTunnel(Saliency): mean absolute gradient under noise, summed over channels."""

    def __init__(self, model: nn.Module, precision: str = DEFAULT_PRECISION, samples: int = 50,
                 sigma: float = 0.15, seed: int = 0, samples_per_pass: int = 25):
        """``sigma``: the noise's standard deviation as a fraction of each image's range."""
        super().__init__(model, precision)
        self.samples = int(samples)
        self.sigma = float(sigma)
        self.seed = int(seed)
        self.samples_per_pass = int(samples_per_pass)

    def _explain(self, images, targets):
        predictions, classes = self._classes(images, targets)
        devices = [images.device] if images.device.type == "cuda" else []
        maps = []
        for image, target in zip(images.detach(), classes.tolist()):
            sigma = self.sigma * float(image.max() - image.min())
            with torch.random.fork_rng(devices=devices), torch.enable_grad():
                torch.manual_seed(self.seed)
                gradients = NoiseTunnel(Saliency(self.model)).attribute(
                    image[None].clone(), nt_type="smoothgrad", nt_samples=self.samples,
                    nt_samples_batch_size=self.samples_per_pass, stdevs=sigma, target=target,
                    abs=True)
            maps.append(gradients.detach().sum(dim=1))
        return predictions, torch.cat(maps)
