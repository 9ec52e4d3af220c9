"""Regenerate the sample images from scikit-image's data module.

Writes, under ``--out`` (default: this folder):

- ``<name>.jpg``: every sample as a plain file, for ``python -m agcam explain samples/*.jpg``;
- ``ILSVRC/Data/CLS-LOC/val/<wnid>/<name>.JPEG`` and ``ILSVRC/Annotations/CLS-LOC/val/<name>.xml``:
  the single-object samples in the ILSVRC 2012 validation layout (Pascal VOC boxes in original
  pixels, drawn by hand), the default ``--data_root`` of localization.py and save_h5.py.

The two-object composite ``cat_and_coffee.jpg`` is left out of the ILSVRC set: a folder gives an
image one label, and the localization metrics would count the other object's box as part of it.

Run from the repository root: ``python samples/make_samples.py``.
"""
from __future__ import annotations

import argparse
import io
import os
from dataclasses import dataclass
from typing import Callable, List, Tuple
from xml.sax.saxutils import escape

from PIL import Image

Box = Tuple[int, int, int, int]  # (xmin, ymin, xmax, ymax) in original pixels

JPEG_QUALITY = 90


@dataclass(frozen=True)
class Sample:
    name: str
    load: Callable[[], Image.Image]
    #: the ImageNet class of the main object (the ILSVRC folder); class index = its position in
    #: the sorted list of the 1000 wnids
    wnid: str
    #: one ``(wnid, box)`` per annotated object
    objects: Tuple[Tuple[str, Box], ...]
    #: whether the sample goes into the ILSVRC-layout set
    ilsvrc: bool = True


def _skimage(name: str) -> Callable[[], Image.Image]:
    def load() -> Image.Image:
        import skimage.data
        # camera() is grey: stored as RGB so that every sample has depth 3 like ILSVRC's JPEGs.
        return Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
    return load


TABBY, ESPRESSO, MISSILE, TRIPOD = "n02123045", "n07920052", "n03773504", "n04485082"

# The composite: Chelsea's face (a 300x300 crop) beside the coffee cup (a 400x400 crop scaled to
# 300x300), 600x300 in all.
CAT_CROP: Box = (50, 0, 350, 300)
COFFEE_CROP: Box = (90, 0, 490, 400)
HALF = 300


def _cat_and_coffee() -> Image.Image:
    cat = _skimage("chelsea")().crop(CAT_CROP)
    coffee = _skimage("coffee")().crop(COFFEE_CROP).resize((HALF, HALF), Image.BICUBIC)
    canvas = Image.new("RGB", (2 * HALF, HALF))
    canvas.paste(cat, (0, 0))
    canvas.paste(coffee, (HALF, 0))
    return canvas


COFFEE_CUP: Box = (170, 15, 412, 310)


def _coffee_cup_in_composite() -> Box:
    """The cup's box of ``coffee`` mapped into the right half of the composite."""
    scale = HALF / (COFFEE_CROP[2] - COFFEE_CROP[0])
    x0, y0, x1, y1 = COFFEE_CUP
    return (HALF + round((x0 - COFFEE_CROP[0]) * scale), round((y0 - COFFEE_CROP[1]) * scale),
            HALF + round((x1 - COFFEE_CROP[0]) * scale), round((y1 - COFFEE_CROP[1]) * scale))


SAMPLES: List[Sample] = [
    # The whole face and the fur below it; the cat fills most of the frame.
    Sample("chelsea", _skimage("chelsea"), TABBY, ((TABBY, (0, 0, 398, 299)),)),
    # The cup with its handle and spoon, not the saucer.
    Sample("coffee", _skimage("coffee"), ESPRESSO, ((ESPRESSO, COFFEE_CUP),)),
    # Falcon 9 on the launch pad, nose to the top of the pad; the towers are left out.
    Sample("rocket", _skimage("rocket"), MISSILE, ((MISSILE, (300, 125, 340, 408)),)),
    # The tripod with the video camera on it; the photographer is left out.
    Sample("camera", _skimage("camera"), TRIPOD, ((TRIPOD, (228, 136, 410, 508)),)),
    Sample("cat_and_coffee", _cat_and_coffee, TABBY,
           ((TABBY, (0, 0, HALF - 1, HALF - 1)), (ESPRESSO, _coffee_cup_in_composite())),
           ilsvrc=False),
]


def annotation_xml(name: str, size: Tuple[int, int], objects) -> str:
    """Pascal VOC XML as in ILSVRC's ``Annotations/CLS-LOC/val``."""
    width, height = size
    parts = [f"<annotation><filename>{escape(name)}</filename>",
             f"<size><width>{width}</width><height>{height}</height><depth>3</depth></size>"]
    for wnid, (xmin, ymin, xmax, ymax) in objects:
        if not (0 <= xmin < xmax <= width and 0 <= ymin < ymax <= height):
            raise ValueError(f"{name}: box {(xmin, ymin, xmax, ymax)} outside {width}x{height}")
        parts.append(f"<object><name>{wnid}</name><bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin>"
                     f"<xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox></object>")
    parts.append("</annotation>\n")
    return "".join(parts)


def jpeg_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    # Fixed settings (no EXIF, no optimiser randomness) so reruns with one Pillow give equal bytes.
    image.save(buffer, format="JPEG", quality=JPEG_QUALITY, subsampling=0)
    return buffer.getvalue()


def write_sample(sample: Sample, out: str) -> List[str]:
    image = sample.load()
    data = jpeg_bytes(image)
    written = [os.path.join(out, f"{sample.name}.jpg")]
    if sample.ilsvrc:
        written.append(os.path.join(out, "ILSVRC", "Data", "CLS-LOC", "val", sample.wnid,
                                    f"{sample.name}.JPEG"))
    for path in written:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as handle:
            handle.write(data)
    if sample.ilsvrc:
        xml = os.path.join(out, "ILSVRC", "Annotations", "CLS-LOC", "val", f"{sample.name}.xml")
        os.makedirs(os.path.dirname(xml), exist_ok=True)
        with open(xml, "w", encoding="utf-8") as handle:
            handle.write(annotation_xml(sample.name, image.size, sample.objects))
        written.append(xml)
    return written


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)),
                        help="folder to write into (default: the samples folder)")
    return parser


def main(args: argparse.Namespace) -> None:
    for sample in SAMPLES:
        for path in write_sample(sample, args.out):
            print(path)


if __name__ == "__main__":
    main(get_args_parser().parse_args())
