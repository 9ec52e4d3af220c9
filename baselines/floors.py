"""Two floors every method should beat: ``random`` (a random map) and ``centre`` (a centred box).

Neither looks at the model's evidence: a method that scores no better than them on a table has
shown nothing. Both are class-agnostic (a target is accepted and ignored) and deterministic, so
they are registered like any method and run through every script, table and figure.

- ``random``: a uniform random map on the patch grid. Its generator is seeded with ``seed`` and
  the image's own bytes (BLAKE2b of the input tensor), so an image gets the same map alone or in
  any batch, on any device, and two images get different maps.
- ``centre``: a Gaussian centred on the patch grid, ``exp(-r^2 / 2)`` with ``r`` the distance
  from the centre in units of ``sigma`` times the grid's side. Thresholded at 0.5 after min-max
  normalisation it is a centred box (about 0.6 of the side for the default ``sigma = 1/4``);
  removed most relevant first it takes the centre away first.

The prediction is the model's own (one forward pass, like every method). ``agcam study`` reports
both below the methods; ``floor = True`` marks them for the tables.
"""
from __future__ import annotations

import hashlib
from typing import Optional, Tuple

import torch

from agcam.explainer import Explainer
from agcam.registry import register


class _Floor(Explainer):
    """A map that does not depend on the model (only the prediction does)."""

    class_specific = False
    #: a floor, not a method: tables list it below the methods
    floor = True

    def _floor_maps(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _explain(self, images: torch.Tensor, targets: Optional[torch.Tensor]
                 ) -> Tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            predictions = self.model(images).argmax(dim=1)
        maps = self._floor_maps(images).to(device=images.device, dtype=images.dtype)
        return predictions, maps


@register("random", label="random map (floor)")
class RandomMap(_Floor):
    """A uniform random map on the patch grid, seeded by ``seed`` and the image's bytes."""

    def __init__(self, model, seed: int = 0, **kwargs):
        super().__init__(model, **kwargs)
        self.seed = int(seed)

    def image_seed(self, image: torch.Tensor) -> int:
        """The seed of one image's map: ``seed`` and the image's bytes, hashed."""
        data = image.detach().cpu().contiguous().numpy().tobytes()
        digest = hashlib.blake2b(data, digest_size=8, key=str(self.seed).encode()).digest()
        return int.from_bytes(digest, "little") & (2 ** 63 - 1)

    def _floor_maps(self, images: torch.Tensor) -> torch.Tensor:
        grid = tuple(self.geometry.grid)
        maps = [torch.rand(grid, generator=torch.Generator().manual_seed(self.image_seed(image)),
                           dtype=torch.float64) for image in images]
        return torch.stack(maps)


@register("centre", label="centred box (floor)")
class CentredBox(_Floor):
    """A Gaussian centred on the patch grid (``sigma``: its width, a fraction of the side)."""

    def __init__(self, model, sigma: float = 0.25, **kwargs):
        super().__init__(model, **kwargs)
        if not sigma > 0:
            raise ValueError(f"sigma must be positive, got {sigma!r}")
        self.sigma = float(sigma)

    def _floor_maps(self, images: torch.Tensor) -> torch.Tensor:
        h, w = self.geometry.grid
        y = (torch.arange(h, dtype=torch.float64) - (h - 1) / 2) / (h * self.sigma)
        x = (torch.arange(w, dtype=torch.float64) - (w - 1) / 2) / (w * self.sigma)
        bump = torch.exp(-0.5 * (y[:, None] ** 2 + x[None, :] ** 2))
        return bump.expand(len(images), h, w).clone()
