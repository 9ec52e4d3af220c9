"""LeGrad's CLIP recipe (Bousselham et al., ICCV 2025), as its official code computes it
(WalBouss/LeGrad, ``legrad/wrapper.py``, ``LeWrapper.compute_legrad_clip``), on a zero-shot head.

For every block ``l`` from ``layer_index`` on (the official default ``-2``: the last two blocks),
with ``z^l`` the block's output tokens and ``A^l`` its post-softmax attention:

    s^l = <normalize(proj(ln_post(mean_n z^l_n))), t>             (the image-text score)
    E^l = mean_{h, query rows} ReLU(d s^l / d A^l)[:, :, :, P]   (P: the patch keys)
    map = sum_l E^l

The mean is over every token (the class token included), ``ln_post`` is the final norm and
``proj`` the projection: on a classifier from :func:`agcam.clip.zero_shot`, the head reads the mean
token exactly so (:func:`baselines.legrad.block_scores`), and its logit is ``logit_scale`` times
the official score (``t`` the normalised text embedding), so the raw map is ``logit_scale`` times
the official one and the displayed (min-max normalised) maps are equal. The official code then
upsamples bilinearly by the patch size and min-max normalises; here the raw map on the patch grid
is returned (:mod:`agcam.maps` does the rest). It differs from ``legrad`` (the paper's choice: all
layers, averaged) in the layers and in summing; on any other classifier it is the same recipe with
the model's head. Verified against the official code in float64 (tests/test_clip_methods.py).
"""
from __future__ import annotations

from torch import nn

from agcam.precision import DEFAULT_PRECISION
from agcam.registry import register
from baselines.legrad import LeGrad


@register("legrad_clip", label="LeGrad (CLIP)")
class LeGradCLIP(LeGrad):
    """LeGrad as its official CLIP code: the blocks from ``layer_index`` on, summed."""

    def __init__(self, model: nn.Module, precision: str = DEFAULT_PRECISION,
                 layer_index: int = -2):
        """``layer_index``: the first block explained (negative counts from the end; the official
        default ``-2``)."""
        depth = len(model.blocks) if hasattr(model, "blocks") else 0
        start = layer_index if layer_index >= 0 else depth + layer_index
        if depth and not 0 <= start < depth:
            raise ValueError(f"layer_index must select a block of the {depth}, got {layer_index}")
        super().__init__(model, precision, layers=list(range(start, depth)) or None)

    def _explain(self, images, targets):
        predictions, mean_map = super()._explain(images, targets)
        return predictions, mean_map * len(self.layers)
