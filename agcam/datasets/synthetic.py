"""A synthetic data set with known boxes: coloured, textured objects on cluttered backgrounds.

Made so that a small ViT can learn it on a CPU in minutes and the explanations can be checked
against boxes that are right by construction (the tight box of every object's drawn pixels).

Classes are colour x texture (:data:`CLASSES`): red, yellow, green or blue (a hue within
:data:`HUE_JITTER` degrees, saturated), ``plain`` (one shade) or ``striped`` (a light and a dark
shade, random angle, period and phase). Each object is drawn as a disc, square, triangle or cross
chosen at random (not a class cue), at a random position and size (:data:`SCALE` of the image
side). Backgrounds are greyish (saturation at most :data:`CLUTTER_SATURATION`): a smooth
two-colour field, pixel noise, random lines and small blobs (smaller than any object). So the
class is in the object's pixels only, and a map that explains it must point at the object. An
image holds one object, or (:func:`sample_image` with ``pair``) two objects of different classes
that do not overlap.

Why colour and texture, not outline: a ViT of a million parameters trained from scratch for a
few minutes on a CPU learns colour at once and stripes soon after, while outlines (disc against
square on a 7 x 7 patch grid) took longer than the time allowed.

Class ``i`` is written under the ``i``-th of the sorted ImageNet wnids (:data:`WNIDS`), so that
:mod:`agcam.datasets.ilsvrc` reads the held-out set with label ``i`` == output ``i`` of the head.

As a data set of the scripts (``--dataset synthetic --data_root samples/synthetic/ILSVRC``, see
:data:`SPEC`) it has the eight classes, so ``vit_agcam_learnt``'s head fits it.

Every image is a function of ``(seed, index)`` only (a NumPy generator seeded with both), so a
set is the same whatever the order or the number of processes that draw it. Write the held-out
set (the ILSVRC validation layout, and the two-object images apart) with

    agcam make-synthetic --out samples/synthetic
"""
from __future__ import annotations

import colorsys
import io
import os
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple
from xml.sax.saxutils import escape

import cv2
import numpy as np
from PIL import Image

from agcam.datasets.common import DataError, DatasetSpec, Listing
from agcam.datasets.ilsvrc import ANNOTATION_DIR, IMAGE_DIR, IMAGENET_WNIDS
from agcam.datasets.ilsvrc import list_samples as ilsvrc_samples

__all__ = ["HUES", "SHAPES", "TEXTURES", "CLASSES", "WNIDS", "IMAGE_SIZE", "SCALE", "PAIR_SCALE",
           "SynthObject", "SynthImage", "sample_image", "sample_batch", "write_heldout",
           "HELDOUT_SEED", "PAIRS_DIR", "jpeg_roundtrip", "list_samples", "SPEC"]

#: the class colours: (name, hue in degrees)
HUES: Tuple[Tuple[str, float], ...] = (("red", 0.0), ("yellow", 55.0), ("green", 125.0),
                                       ("blue", 225.0))
TEXTURES: Tuple[str, ...] = ("plain", "striped")
#: class i: ``"<colour> <texture>"``, colour-major
CLASSES: Tuple[str, ...] = tuple(f"{h} {t}" for h, _ in HUES for t in TEXTURES)
#: the outlines every class is drawn in (chosen at random: not a class cue)
SHAPES: Tuple[str, ...] = ("disc", "square", "triangle", "cross")
#: how far an object's hue strays from its class hue (degrees)
HUE_JITTER = 12.0
#: the background, its lines and blobs are greyish: saturation at most this
CLUTTER_SATURATION = 0.25
#: the folder (ILSVRC wnid) of class i: the i-th sorted ImageNet wnid
WNIDS: Tuple[str, ...] = IMAGENET_WNIDS[:len(CLASSES)]

IMAGE_SIZE = 224
#: object size (side of its box before the aspect jitter) as a fraction of the image side
SCALE = (0.25, 0.6)
#: the same for each object of a two-object image
PAIR_SCALE = (0.22, 0.42)
#: the width/height ratio of an object's box, log-uniform in [1/ASPECT, ASPECT]
ASPECT = 1.25
#: texture period in pixels (stripes: one dark + one light band; checks: one cell pair)
PERIOD = (10.0, 20.0)

#: the seed of the committed held-out set (training uses others; see agcam.train.learnt)
HELDOUT_SEED = 2024
#: the folder of the two-object images beside the ILSVRC-layout set
PAIRS_DIR = "pairs"
#: the JPEG settings of the held-out files (ILSVRC's usual 4:2:0 chroma subsampling)
JPEG_QUALITY = 85
JPEG_SUBSAMPLING = 2

Box = Tuple[int, int, int, int]  # (xmin, ymin, xmax, ymax), inclusive pixel coordinates


@dataclass(frozen=True)
class SynthObject:
    label: int
    box: Box

    @property
    def name(self) -> str:
        return CLASSES[self.label]


@dataclass(frozen=True)
class SynthImage:
    """An ``[H, W, 3]`` uint8 RGB image and its objects (the first is the image's label)."""

    pixels: np.ndarray
    objects: Tuple[SynthObject, ...]

    @property
    def label(self) -> int:
        return self.objects[0].label


def _noise_bank(size: int) -> np.ndarray:
    """A fixed ``[2 size, 2 size, 3]`` field of Gaussian pixel noise; every image takes a random
    window of it (drawing fresh noise per image would cost more than the rest of the image)."""
    return np.random.default_rng(0).standard_normal((2 * size, 2 * size, 3)).astype(np.float32)


_BANKS = {}


def _noise(rng: np.random.Generator, size: int) -> np.ndarray:
    bank = _BANKS.get(size)
    if bank is None:
        bank = _BANKS[size] = _noise_bank(size)
    y, x = rng.integers(0, size, 2)
    noise = bank[y:y + size, x:x + size]
    return noise[::-1] if rng.random() < 0.5 else noise


def _hsv(hue: float, saturation: float, value: float) -> np.ndarray:
    """RGB in 0-255 (float32) of a hue in degrees, saturation and value in [0, 1]."""
    return np.array(colorsys.hsv_to_rgb((hue % 360.0) / 360.0, saturation, value),
                    dtype=np.float32) * 255.0


def _clutter_colour(rng: np.random.Generator) -> np.ndarray:
    """A greyish colour (saturation at most :data:`CLUTTER_SATURATION`), any hue and value."""
    return _hsv(rng.uniform(0.0, 360.0), rng.uniform(0.0, CLUTTER_SATURATION),
                rng.uniform(0.15, 0.95))


def _object_colours(rng: np.random.Generator, hue: float) -> Tuple[np.ndarray, np.ndarray]:
    """A light and a dark shade of a saturated colour near ``hue``, in random order."""
    hue = hue + rng.uniform(-HUE_JITTER, HUE_JITTER)
    light = _hsv(hue, rng.uniform(0.7, 1.0), rng.uniform(0.8, 1.0))
    dark = _hsv(hue, rng.uniform(0.7, 1.0), rng.uniform(0.3, 0.5))
    return (light, dark) if rng.random() < 0.5 else (dark, light)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """``[size, size, 3]`` float32: a smooth field between two colours, random lines, small
    blobs and pixel noise."""
    low, high = _clutter_colour(rng), _clutter_colour(rng)
    grid = rng.integers(3, 7)
    field = cv2.resize(rng.random((grid, grid), dtype=np.float32), (size, size),
                       interpolation=cv2.INTER_CUBIC).clip(0.0, 1.0)[..., None]
    image = low + (high - low) * field
    for _ in range(int(rng.integers(3, 10))):
        p0 = tuple(int(v) for v in rng.integers(-size // 4, size + size // 4, 2))
        p1 = tuple(int(v) for v in rng.integers(-size // 4, size + size // 4, 2))
        cv2.line(image, p0, p1, tuple(float(c) for c in _clutter_colour(rng)),
                 thickness=int(rng.integers(1, 4)), lineType=cv2.LINE_AA)
    # blobs stay well below the smallest object (a quarter of its side as radius)
    blob_max = max(3, int(PAIR_SCALE[0] * size / 4))
    for _ in range(int(rng.integers(2, 8))):
        centre = tuple(int(v) for v in rng.integers(0, size, 2))
        radius = int(rng.integers(2, blob_max))
        colour = tuple(float(c) for c in _clutter_colour(rng))
        if rng.random() < 0.5:
            cv2.circle(image, centre, radius, colour, thickness=-1, lineType=cv2.LINE_AA)
        else:
            cv2.rectangle(image, (centre[0] - radius, centre[1] - radius),
                          (centre[0] + radius, centre[1] + radius), colour, thickness=-1)
    image += _noise(rng, size) * float(rng.uniform(2.0, 12.0))
    return image


def _shape_mask(shape: str, width: int, height: int) -> np.ndarray:
    """``[height, width]`` float32 coverage in [0, 1] of ``shape`` filling its box."""
    mask = np.zeros((height, width), dtype=np.uint8)
    if shape == "disc":
        ellipse = (((width - 1) / 2.0, (height - 1) / 2.0), (float(width), float(height)), 0.0)
        cv2.ellipse(mask, ellipse, 255, thickness=-1, lineType=cv2.LINE_AA)
    elif shape == "square":
        mask[:] = 255
    elif shape == "triangle":
        points = np.array([[(width - 1) / 2.0, 0], [width - 1, height - 1], [0, height - 1]])
        cv2.fillPoly(mask, [np.round(points * 16).astype(np.int32)], 255,
                     lineType=cv2.LINE_AA, shift=4)
    elif shape == "cross":
        arm_w, arm_h = max(1, round(width / 3)), max(1, round(height / 3))
        x0, y0 = (width - arm_w) // 2, (height - arm_h) // 2
        mask[:, x0:x0 + arm_w] = 255
        mask[y0:y0 + arm_h, :] = 255
    else:
        raise ValueError(f"unknown shape {shape!r}")
    return mask.astype(np.float32) / 255.0


def _texture(rng: np.random.Generator, texture: str, width: int, height: int) -> np.ndarray:
    """``[height, width]`` float32 in [0, 1]: how much of the second colour each pixel takes
    (none for ``plain``; stripes of a random angle, period and phase for ``striped``)."""
    if texture == "plain":
        return np.zeros((height, width), dtype=np.float32)
    if texture != "striped":
        raise ValueError(f"unknown texture {texture!r}")
    period = float(rng.uniform(*PERIOD))
    angle = float(rng.uniform(0.0, np.pi))
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    wave = np.sin(2 * np.pi * ((x * np.cos(angle) + y * np.sin(angle)) / period + rng.random()))
    # a steep but smooth edge between the two colours (no aliasing at small periods)
    return np.clip(0.5 + 2.0 * wave, 0.0, 1.0)


def _object_size(rng: np.random.Generator, size: int, scale: Tuple[float, float]
                 ) -> Tuple[int, int]:
    side = rng.uniform(*scale) * size
    aspect = np.exp(rng.uniform(-np.log(ASPECT), np.log(ASPECT)))
    width = int(np.clip(round(side * np.sqrt(aspect)), 8, size))
    height = int(np.clip(round(side / np.sqrt(aspect)), 8, size))
    return width, height


def _place(rng: np.random.Generator, size: int, scale: Tuple[float, float],
           boxes: Sequence[Box], where: str) -> Tuple[int, int, int, int]:
    """``(x0, y0, width, height)`` of a new object of ``scale``, at a random place at least 4
    pixels from every box of ``boxes`` (100 draws at most)."""
    for _ in range(100):
        width, height = _object_size(rng, size, scale)
        x0 = int(rng.integers(0, size - width + 1))
        y0 = int(rng.integers(0, size - height + 1))
        candidate = (x0, y0, x0 + width - 1, y0 + height - 1)
        if not any(_overlap(candidate, b, margin=4) for b in boxes):
            return x0, y0, width, height
    raise RuntimeError(f"no room for a second object ({where})")  # pragma: no cover


def _paint(rng: np.random.Generator, image: np.ndarray, label: int, x0: int, y0: int,
           width: int, height: int) -> Box:
    """Draw object ``label`` into ``image`` with its box's top-left at ``(x0, y0)``; returns the
    tight box of the drawn pixels (coverage above one half)."""
    hue, texture = HUES[label // len(TEXTURES)][1], TEXTURES[label % len(TEXTURES)]
    shape = SHAPES[int(rng.integers(len(SHAPES)))]
    return _fill(rng, image, hue, texture, shape, x0, y0, width, height)


def _fill(rng: np.random.Generator, image: np.ndarray, hue: float, texture: str, shape: str,
          x0: int, y0: int, width: int, height: int) -> Box:
    """Paint an object of ``shape`` (an outline of :data:`SHAPES`), ``texture`` and ``hue`` with
    its box's top-left at ``(x0, y0)``: the texture, then the two colours drawn from ``rng``;
    the tight box of the drawn pixels (coverage above one half)."""
    mask = _shape_mask(shape, width, height)[..., None]
    mix = _texture(rng, texture, width, height)[..., None]
    first, second = _object_colours(rng, hue)
    fill = first + (second - first) * mix
    window = image[y0:y0 + height, x0:x0 + width]
    window[:] = window * (1.0 - mask) + fill * mask
    rows = np.flatnonzero(mask[..., 0].max(axis=1) > 0.5)
    cols = np.flatnonzero(mask[..., 0].max(axis=0) > 0.5)
    return (x0 + int(cols[0]), y0 + int(rows[0]), x0 + int(cols[-1]), y0 + int(rows[-1]))


def _overlap(a: Box, b: Box, margin: int) -> bool:
    return not (a[2] + margin < b[0] or b[2] + margin < a[0]
                or a[3] + margin < b[1] or b[3] + margin < a[1])


def sample_image(seed: int, index: int, pair: bool = False, size: int = IMAGE_SIZE,
                 label: Optional[int] = None, second: Optional[int] = None) -> SynthImage:
    """Image ``index`` of the stream ``seed``: one object of class ``label`` (random if None),
    or with ``pair`` two objects of different classes (``label``, ``second``) that do not
    overlap. The same arguments give the same image."""
    rng = np.random.default_rng([int(seed), int(index), int(pair)])
    count = len(CLASSES)
    first = int(rng.integers(count)) if label is None else int(label)
    labels = [first]
    if pair:
        other = int(rng.integers(count - 1)) if second is None else int(second)
        if second is None and other >= first:
            other += 1
        if other == first:
            raise ValueError("the two objects of a pair must be of different classes")
        labels.append(other)
    image = _background(rng, size)
    boxes: List[Box] = []
    for obj_label in labels:
        x0, y0, width, height = _place(rng, size, PAIR_SCALE if pair else SCALE, boxes,
                                       f"seed {seed}, index {index}")
        boxes.append(_paint(rng, image, obj_label, x0, y0, width, height))
    pixels = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    return SynthImage(pixels, tuple(SynthObject(lb, b) for lb, b in zip(labels, boxes)))


def sample_batch(seed: int, start: int, count: int, pair_fraction: float = 0.0,
                 size: int = IMAGE_SIZE) -> List[SynthImage]:
    """Images ``start .. start + count - 1`` of the stream ``seed``; image ``i`` holds two
    objects when a draw seeded with ``(seed, i)`` falls below ``pair_fraction``."""
    out = []
    for index in range(start, start + count):
        pair = np.random.default_rng([int(seed), int(index), 2]).random() < pair_fraction
        out.append(sample_image(seed, index, pair=pair, size=size))
    return out


# --------------------------------------------------------------------------------------------
# the held-out set on disk


def annotation_xml(name: str, size: Tuple[int, int], objects: Sequence[SynthObject]) -> str:
    """Pascal VOC XML as in ILSVRC's ``Annotations/CLS-LOC/val`` (object names are wnids)."""
    width, height = size
    parts = [f"<annotation><filename>{escape(name)}</filename>",
             f"<size><width>{width}</width><height>{height}</height><depth>3</depth></size>"]
    for obj in objects:
        xmin, ymin, xmax, ymax = obj.box
        parts.append(f"<object><name>{WNIDS[obj.label]}</name><bndbox><xmin>{xmin}</xmin>"
                     f"<ymin>{ymin}</ymin><xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox>"
                     "</object>")
    parts.append("</annotation>\n")
    return "".join(parts)


def _jpeg(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=JPEG_QUALITY,
                                 subsampling=JPEG_SUBSAMPLING)
    return buffer.getvalue()


def jpeg_roundtrip(pixels: np.ndarray) -> Image.Image:
    """The image as the held-out files store it: JPEG-encoded with their settings, decoded."""
    with Image.open(io.BytesIO(_jpeg(pixels))) as image:
        return image.convert("RGB")


def _write(path: str, data, mode: str = "wb") -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, mode) as handle:
        handle.write(data)


def write_heldout(out: str, per_class: int = 20, pairs: int = 16, seed: int = HELDOUT_SEED
                  ) -> Tuple[str, str]:
    """Write the held-out set under ``out``: ``ILSVRC/`` (``per_class`` single-object images of
    every class, in the ILSVRC validation layout: ``Data/CLS-LOC/val/<wnid>/<name>.JPEG`` and
    ``Annotations/CLS-LOC/val/<name>.xml``) and ``pairs/`` (``pairs`` two-object images, the
    same layout with the images directly in ``Data/CLS-LOC/val``: their annotation names both
    objects, the first one is the label). Returns the two roots."""
    single_root = os.path.join(out, "ILSVRC")
    pairs_root = os.path.join(out, PAIRS_DIR)
    index = 0
    for label in range(len(CLASSES)):
        for k in range(per_class):
            item = sample_image(seed, index, label=label)
            name = f"synth_{index:05d}"
            _write(os.path.join(single_root, IMAGE_DIR, WNIDS[label], name + ".JPEG"),
                   _jpeg(item.pixels))
            _write(os.path.join(single_root, ANNOTATION_DIR, name + ".xml"),
                   annotation_xml(name, item.pixels.shape[1::-1], item.objects), "w")
            index += 1
    count = len(CLASSES)
    for k in range(pairs):
        # every class first in turn, the second one cycling through the others
        first = k % count
        second = (first + 1 + (k // count) % (count - 1)) % count
        item = sample_image(seed, index, pair=True, label=first, second=second)
        name = f"synth_pair_{k:03d}"
        _write(os.path.join(pairs_root, IMAGE_DIR, name + ".JPEG"), _jpeg(item.pixels))
        _write(os.path.join(pairs_root, ANNOTATION_DIR, name + ".xml"),
               annotation_xml(name, item.pixels.shape[1::-1], item.objects), "w")
        index += 1
    return single_root, pairs_root


def list_samples(data_root: str, split: str = "val", limit: Optional[int] = None,
                 flag: str = "--data_root") -> Listing:
    """The held-out set under ``data_root`` (the ILSVRC layout, read by the ILSVRC reader) as
    the ``synthetic`` data set: :data:`CLASSES`, so a model with one output per class fits."""
    listing = ilsvrc_samples(data_root, split, limit, flag)
    for sample in listing.samples:
        if sample.label >= len(CLASSES):
            raise DataError(f"{sample.path}: folder {sample.wnid} is not one of the "
                            f"{len(CLASSES)} synthetic classes ({WNIDS[0]} ... {WNIDS[-1]})")
    return Listing(dataset="synthetic", split=listing.split, samples=listing.samples,
                   class_names=CLASSES, listed=listing.listed, dropped=listing.dropped)


SPEC = DatasetSpec(
    name="synthetic", prefix="SYNTH", num_classes=len(CLASSES), splits=("val",),
    eval_split="val", train_split=None,
    root_help="the synthetic set in the ILSVRC layout, e.g. samples/synthetic/ILSVRC "
              "(written by agcam make-synthetic)",
    list_samples=list_samples)
