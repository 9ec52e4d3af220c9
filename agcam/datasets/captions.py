"""Synthetic shapes with captions: colour, texture and shape words ("a red striped circle").

The images of :mod:`agcam.datasets.synthetic` (same backgrounds, colours, textures and outlines,
drawn by its helpers), with every object's outline recorded so that a caption can name it; the
stream is its own (a generator seeded with ``(seed, index, pair, 3)``), so the existing
generator's images are unchanged. Used to train ``clip_agcam_learnt``
(:mod:`agcam.train.clip`) and to test that its maps follow a prompt.

An object has a colour (:data:`COLOUR_WORDS`), a texture (:data:`TEXTURE_WORDS`) and a shape
(:data:`SHAPE_WORDS`; the generator's ``disc`` is called ``circle``). A caption names a non-empty
subset of the three, in that order ("red", "a striped circle", "a photo of a red plain shape");
it *describes* an image when one of the image's objects has every attribute it names
(:func:`describes`), which is what the contrastive loss counts as a positive pair.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import FrozenSet, List, Optional, Sequence, Tuple

import numpy as np

from agcam.datasets.synthetic import (
    HUES,
    IMAGE_SIZE,
    PAIR_SCALE,
    SCALE,
    SHAPES,
    TEXTURES,
    Box,
    _background,
    _fill,
    _place,
)

__all__ = ["KIND_NAMES", "COLOUR_WORDS", "TEXTURE_WORDS", "SHAPE_WORDS", "Attributes",
           "CaptionedObject", "CaptionedImage", "sample_captioned", "sample_captioned_batch",
           "random_caption", "describes", "class_prompts"]

#: the kinds of attribute, in the order of :data:`Attributes`' kind index and of a ``Spec``
KIND_NAMES: Tuple[str, ...] = ("colour", "texture", "shape")
COLOUR_WORDS: Tuple[str, ...] = tuple(name for name, _ in HUES)
TEXTURE_WORDS: Tuple[str, ...] = TEXTURES
#: the generator's outlines as a caption names them (its ``disc`` is a ``circle``)
SHAPE_WORDS: Tuple[str, ...] = tuple("circle" if s == "disc" else s for s in SHAPES)

#: the range of a large object's side over the image's (training draws some: an outline across
#: more patches is learnt sooner, measured)
LARGE_SCALE = (0.5, 0.9)

#: (kind, word) pairs: kind 0 colour, 1 texture, 2 shape
Attributes = FrozenSet[Tuple[int, str]]


@dataclass(frozen=True)
class CaptionedObject:
    colour: str
    texture: str
    shape: str
    box: Box

    @property
    def attributes(self) -> Attributes:
        return frozenset({(0, self.colour), (1, self.texture), (2, self.shape)})

    @property
    def caption(self) -> str:
        return f"a {self.colour} {self.texture} {self.shape}"


@dataclass(frozen=True)
class CaptionedImage:
    """An ``[H, W, 3]`` uint8 RGB image and its objects."""

    pixels: np.ndarray
    objects: Tuple[CaptionedObject, ...]


Spec = Tuple[str, str, str]  # (colour, texture, shape) words


def _draw(rng: np.random.Generator, image: np.ndarray, spec: Spec, x0: int, y0: int,
          width: int, height: int) -> Box:
    """Draw an object of ``spec`` with its box's top-left at ``(x0, y0)`` (the synthetic
    generator's painting, the outline given); the tight box of its drawn pixels."""
    colour, texture, shape = spec
    return _fill(rng, image, dict(HUES)[colour], texture, SHAPES[SHAPE_WORDS.index(shape)],
                 x0, y0, width, height)


def _random_spec(rng: np.random.Generator) -> Spec:
    return (COLOUR_WORDS[int(rng.integers(len(COLOUR_WORDS)))],
            TEXTURE_WORDS[int(rng.integers(len(TEXTURE_WORDS)))],
            SHAPE_WORDS[int(rng.integers(len(SHAPE_WORDS)))])


def sample_captioned(seed: int, index: int, pair: bool = False, size: int = IMAGE_SIZE,
                     specs: Optional[Sequence[Spec]] = None,
                     scale: Optional[Tuple[float, float]] = None) -> CaptionedImage:
    """Image ``index`` of the stream ``seed``: one object (or with ``pair`` two objects that
    differ in colour, texture and shape, and do not overlap); ``specs`` fixes their
    ``(colour, texture, shape)`` words, ``scale`` the range of an object's side over the image's
    (default: the synthetic set's, :data:`SCALE` or :data:`PAIR_SCALE`). The same arguments give
    the same image."""
    rng = np.random.default_rng([int(seed), int(index), int(pair), 3])
    if specs is None:
        first = _random_spec(rng)
        specs = [first]
        if pair:
            # the second object differs in every attribute, so each word picks one object
            words = (COLOUR_WORDS, TEXTURE_WORDS, SHAPE_WORDS)
            specs.append(tuple(
                [w for w in pool if w != first[k]][int(rng.integers(len(pool) - 1))]
                for k, pool in enumerate(words)))
    image = _background(rng, size)
    boxes: List[Box] = []
    scale = scale or (PAIR_SCALE if len(specs) > 1 else SCALE)
    for spec in specs:
        x0, y0, width, height = _place(rng, size, scale, boxes, f"seed {seed}, index {index}")
        boxes.append(_draw(rng, image, tuple(spec), x0, y0, width, height))
    pixels = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    return CaptionedImage(pixels, tuple(CaptionedObject(*spec, box)
                                        for spec, box in zip(specs, boxes)))


def sample_captioned_batch(seed: int, start: int, count: int, pair_fraction: float = 0.0,
                           size: int = IMAGE_SIZE, large_fraction: float = 0.0
                           ) -> List[CaptionedImage]:
    """Images ``start .. start + count - 1`` of the stream ``seed``; image ``i`` holds two objects
    when a draw seeded with ``(seed, i, 4)`` falls below ``pair_fraction``, and a single object
    of :data:`LARGE_SCALE` when one seeded with ``(seed, i, 6)`` falls below
    ``large_fraction``."""
    out = []
    for index in range(start, start + count):
        pair = np.random.default_rng([int(seed), int(index), 4]).random() < pair_fraction
        large = not pair and large_fraction > 0 and \
            np.random.default_rng([int(seed), int(index), 6]).random() < large_fraction
        out.append(sample_captioned(seed, index, pair=pair, size=size,
                                    scale=LARGE_SCALE if large else None))
    return out


#: the prefixes a training caption starts with
PREFIXES = ("", "a ", "a photo of a ")


def random_caption(rng: np.random.Generator, obj: CaptionedObject, full: float = 0.0
                   ) -> Tuple[str, Attributes]:
    """A caption of ``obj`` naming a random non-empty subset of its attributes (all three with
    probability ``full``), and that subset: "red", "a striped circle", "a photo of a yellow
    plain shape"."""
    words = (obj.colour, obj.texture, obj.shape)
    while True:
        keep = rng.random(3) < 0.6
        if full and rng.random() < full:
            keep[:] = True
        if keep.any():
            break
    named = [w for w, k in zip(words, keep) if k]
    if not keep[2] and rng.random() < 0.5:
        named.append("shape")
    prefix = PREFIXES[int(rng.integers(len(PREFIXES)))]
    attributes = frozenset((k, w) for k, (w, kept) in enumerate(zip(words, keep)) if kept)
    return prefix + " ".join(named), attributes


def describes(attributes: Attributes, image: CaptionedImage) -> bool:
    """Whether one of the image's objects has every attribute of the caption."""
    return any(attributes <= obj.attributes for obj in image.objects)


def class_prompts() -> List[str]:
    """The prompts of the eight classes of :data:`agcam.datasets.synthetic.CLASSES` (colour x
    texture), class ``i`` first: ``"a red plain shape"``, ..."""
    return [f"a {c} {t} shape" for c in COLOUR_WORDS for t in TEXTURE_WORDS]
