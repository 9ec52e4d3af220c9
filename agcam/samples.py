"""Images shipped inside the package, so that the README's lines run from any folder after
``pip install``: ``agcam.sample_image()`` is the path of a two-object image of the learnt
model's held-out set (``samples/synthetic/pairs``, same bytes)."""
from __future__ import annotations

import os

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
#: the images shipped (name -> file in agcam/data)
SAMPLES = {"synth_pair_001": "synth_pair_001.JPEG"}


def sample_image(name: str = "synth_pair_001") -> str:
    """The path of a shipped sample image (default: a circle and a square, classes 1 and 2 of
    ``vit_agcam_learnt``); ``ValueError`` naming the samples for another name."""
    if name not in SAMPLES:
        raise ValueError(f"unknown sample {name!r}; the samples are {', '.join(SAMPLES)}")
    return os.path.join(DATA, SAMPLES[name])
