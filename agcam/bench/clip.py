"""``agcam bench --clip MODEL``: the cost of explaining a text prompt against a forward pass.

The timed model is the zero-shot classifier (:func:`agcam.clip.zero_shot`) of ``--clip_text`` on
the image-text model ``MODEL`` (``clip_agcam_learnt``, or ``hf:<repo>`` /
``open_clip:<arch>/<pretrained>`` from the local cache), with its own weights: its forward pass is
CLIP's image embedding and the prompts' logits, and each method's time is that of explaining one
prompt (the predicted one) of every image, timed in turns with the forward pass as ``agcam bench``
does for any classifier.
"""
from __future__ import annotations

import argparse

import torch
from torch import nn

#: the prompts timed by default
DEFAULT_PROMPTS = ("a photo of a cat", "a photo of a dog")


def clip_classifier(args: argparse.Namespace) -> nn.Module:
    """``--threads`` applied, seed 0, the zero-shot classifier of ``--clip_text`` on ``--clip``,
    on ``--device``."""
    from agcam.clip import prompt_classifier
    from agcam.errors import UsageError
    from models.vit import ModelError
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    prompts = list(getattr(args, "clip_text", None) or DEFAULT_PROMPTS)
    try:
        return prompt_classifier(args.clip, prompts, device=torch.device(args.device))
    except ModelError as exc:
        raise UsageError(f"--clip: {exc}") from None
