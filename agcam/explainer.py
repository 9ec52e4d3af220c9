"""One interface for AGCAM and every baseline (the registry of names is :mod:`agcam.registry`).

``explain(images[B, 3, H, W], target=None) -> (predictions[B], maps[B, h, w])``: raw maps, no
upsampling or normalisation (see :mod:`agcam.maps` for those), at the method's ``resolution``:
``"patch"`` (the model's patch grid, ``h, w = grid``) or ``"pixel"`` (the input size,
``h, w = H, W``: the input-gradient methods and the LRP variants that end at the pixels).
``target=None`` explains the predicted class; an int explains that class for every image; a
sequence or tensor of B ints explains one class per image.

Precision (:mod:`agcam.precision`): every method runs its forward and backward at the explainer's
``precision`` (``fp32`` by default, exact; ``tf32``; ``bf16`` under autocast) and returns maps in
the model's dtype. A method that cannot run at a precision lists only the others in
``precisions`` and refuses it with a ``ValueError``.

Models: a timm ``VisionTransformer``, or a Hugging Face ``transformers`` ViT / DeiT / DINOv2 /
CLIP vision model, which is converted once per explainer into the equal timm model
(:func:`models.transformers.from_transformers`).
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from agcam.precision import (
    DEFAULT_PRECISION,
    PRECISIONS,
    autocast_active,
    check_precision,
)
from agcam.precision import precision as precision_context
from models.vit import model_geometry

Target = Union[None, int, Sequence[int], torch.Tensor]


class Explanation(NamedTuple):
    """What :meth:`Explainer.explain` returns; unpacks as ``predictions, maps = ...``."""

    #: ``[B]`` long: the model's predicted class of every image
    predictions: torch.Tensor
    #: ``[B, grid_h, grid_w]`` raw maps on the patch grid (no upsampling, no normalisation)
    maps: torch.Tensor


def is_transformers_model(model) -> bool:
    """Whether ``model`` is a Hugging Face ``transformers`` model, judged by its class's module
    (so that ``transformers`` is never imported to find out)."""
    return isinstance(model, nn.Module) and type(model).__module__.startswith("transformers.")


class Explainer:
    """Base class: subclasses implement :meth:`_explain` on a batch already on the model's
    device."""

    #: command-line name, display label and whether the paper reports the method, set by
    #: :func:`agcam.registry.register`
    name: str = ""
    label: str = ""
    paper: bool = False
    #: whether the map depends on the target class (Rollout's does not)
    class_specific: bool = True
    #: the precisions the method supports (:data:`agcam.precision.PRECISIONS`)
    precisions: Tuple[str, ...] = PRECISIONS
    #: why a precision is refused (the ``ValueError``'s reason), for the methods that refuse one
    refusal: str = ""
    #: ``"patch"``: maps on the patch grid; ``"pixel"``: maps at the input size
    resolution: str = "patch"
    #: whether the method reads the class token (its attention row, its gradient); a model
    #: without one (SigLIP's attention pooling) is refused with the reason
    needs_class_token: bool = True

    def __init__(self, model: nn.Module, precision: str = DEFAULT_PRECISION):
        if is_transformers_model(model):
            # A Hugging Face model is converted once, here, into the equal timm ViT every method
            # runs on (models/transformers.py); the caller's model is left untouched. Subclasses
            # read ``self.model``, never their ``model`` argument, after this call.
            from models.transformers import from_transformers
            model = from_transformers(model)
        self.model = model
        if self.needs_class_token and getattr(model, "cls_token", None) is None:
            raise ValueError(f"{self.name or type(self).__name__} explains through the class "
                             f"token, and this model has none (pooling "
                             f"{getattr(model, 'global_pool', '?')!r}); methods that need no "
                             "class token: legrad, legrad_clip, gradcam_tokens, ig, ixg, "
                             "smoothgrad, vitcx, libra_ixg, libra_ig")
        self.geometry = model_geometry(model)
        self._precision = DEFAULT_PRECISION
        self.precision = precision

    @property
    def precision(self) -> str:
        """``fp32``, ``tf32`` or ``bf16``: how :meth:`explain` runs the model (settable)."""
        return getattr(self, "_precision", DEFAULT_PRECISION)

    @precision.setter
    def precision(self, mode: str) -> None:
        self.check_supported(mode)
        self._precision = mode

    @classmethod
    def check_supported(cls, mode: str) -> None:
        """``ValueError`` naming the method and the reason if it cannot run at ``mode``."""
        check_precision(mode)
        if mode not in cls.precisions:
            raise ValueError(f"{cls.name or cls.__name__} cannot run at precision "
                             f"{mode}{': ' + cls.refusal if cls.refusal else ''}; use "
                             f"{' or '.join(cls.precisions)}")

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def explain(self, images: torch.Tensor, target: Target = None) -> Explanation:
        """Explain a batch: ``images`` ``[B, 3, H, W]`` (normalised model input, the model's input
        size), ``target`` ``None`` (each image's predicted class), an int (that class for every
        image) or ``B`` ints. Returns :class:`Explanation` ``(predictions, maps)``; the model is
        left as it was (mode, parameters, no hook)."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be [B, 3, H, W], got {tuple(images.shape)}")
        expected = self.geometry.input_size
        if tuple(images.shape[-2:]) != tuple(expected):
            raise ValueError(f"images are {tuple(images.shape[-2:])} but the model takes "
                             f"{expected}")
        dtype = next(self.model.parameters()).dtype
        images = images.to(self.device, dtype=dtype)
        targets = resolve_target(target, images.shape[0], self.device)
        was_training = self.model.training
        self.model.eval()
        try:
            with precision_context(self.precision, self.device.type):
                if autocast_active(self.device.type):   # also a caller's own autocast
                    self.check_supported("bf16")
                predictions, maps = self._explain(images, targets)
        finally:
            self.model.train(was_training)
        # Reduced-precision maps come back in the model's dtype (a no-op at fp32).
        return Explanation(predictions, maps.to(dtype).reshape(images.shape[0], *self.map_size()))

    __call__ = explain

    def _explain(self, images: torch.Tensor, targets: Optional[torch.Tensor]
                 ) -> Tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def map_size(self) -> Tuple[int, int]:
        """``(h, w)`` of the maps :meth:`explain` returns: the patch grid or the input size."""
        if self.resolution == "pixel":
            return tuple(self.geometry.input_size)
        if self.resolution != "patch":
            raise ValueError(f"{self.name}: resolution must be 'patch' or 'pixel', "
                             f"not {self.resolution!r}")
        return tuple(self.geometry.grid)

    def patch_columns(self) -> slice:
        """Token columns of the patch grid (all prefix tokens dropped)."""
        return slice(self.geometry.num_prefix_tokens, None)


def resolve_target(target: Target, batch: int, device: torch.device) -> Optional[torch.Tensor]:
    """``None`` stays ``None`` (predicted class); else a ``[B]`` long tensor on ``device``."""
    if target is None:
        return None
    targets = torch.as_tensor(target, dtype=torch.long, device=device).reshape(-1)
    if targets.numel() == 1:
        targets = targets.expand(batch)
    if targets.numel() != batch:
        raise ValueError(f"target has {targets.numel()} entries for {batch} images")
    return targets


def class_scores(logits: torch.Tensor, targets: Optional[torch.Tensor]
                 ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Predictions, the explained classes and their summed logit.

    Each image's logit depends on that image only, so the gradient of the sum gives every image
    its own gradient: a batch explains exactly like B single-image calls.
    """
    predictions = logits.argmax(dim=1)
    classes = predictions if targets is None else targets
    num_classes = logits.shape[1]
    if bool(((classes < 0) | (classes >= num_classes)).any()):
        raise ValueError(f"target class outside [0, {num_classes})")
    score = logits.gather(1, classes[:, None]).sum()
    return predictions, classes, score
