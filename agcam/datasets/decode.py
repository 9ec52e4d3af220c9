"""``--decode gpu``: JPEG decode and resize on the model's device, an opt-in to the exact PIL path.

The released preprocessing (PIL decode, ``Resize((H, W))`` bilinear on the PIL image) runs on the
CPU in the loader workers and caps a GPU run (docs/gpu.md gives the measured rates). Here the
workers only read each JPEG's bytes and header (size, mode) and the main process decodes the
batch on the device with ``torchvision.io.decode_jpeg(..., device=...)`` (nvJPEG on CUDA,
libjpeg-turbo on the CPU) and resizes it with antialiased bilinear interpolation
(``torch.nn.functional.interpolate(antialias=True)``, float, rounded to uint8). The pixels are
close to PIL's, not equal: PIL rounds to 8 bits between its horizontal and vertical passes and
nvJPEG's IDCT differs from libjpeg's (docs/gpu.md gives the measured difference).

What is not a plain RGB or greyscale JPEG (PNG, CMYK JPEG, a file PIL cannot open), and a JPEG
the device decoder rejects, takes the released PIL path instead, so every file is handled as
``--decode pil`` handles it: decoded, or marked unreadable and counted as skipped.
"""
from __future__ import annotations

import io
from typing import Any, Dict, Iterable, Iterator, List, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from agcam.datasets.common import ValDataset, collate, gt_boxes, normalize_images
from models.vit import Geometry

#: PIL modes of the JPEGs sent to the device decoder (others, e.g. CMYK, use PIL)
DEVICE_JPEG_MODES = ("RGB", "L")


class EncodedDataset(ValDataset):
    """A :class:`~agcam.datasets.common.ValDataset` whose plain JPEG items carry the file's bytes
    (``encoded``, uint8) instead of decoded pixels; the others are decoded by PIL as released
    (their ``image`` is always kept: the device builds every input from uint8 pixels)."""

    def __init__(self, samples, model_or_geometry, keep_image: bool = True):
        super().__init__(samples, model_or_geometry, keep_image=True)
        self.return_image = keep_image

    def __getitem__(self, index: int) -> Dict[str, Any]:
        sample = self.samples[index]
        try:
            with Image.open(sample.path) as image:          # reads the header only
                fmt, mode, real_size = image.format, image.mode, image.size
            if fmt == "JPEG" and mode in DEVICE_JPEG_MODES:
                with open(sample.path, "rb") as handle:
                    data = handle.read()
                height, width = self.geometry.input_size
                return {"index": index, "label": sample.label, "valid": True, "error": "",
                        "size": tuple(real_size), "encoded": torch.frombuffer(
                            bytearray(data), dtype=torch.uint8),
                        "boxes": gt_boxes(sample.boxes, real_size[0], real_size[1],
                                          (height, width))}
        except Exception:  # noqa: BLE001 - the PIL path below reports the file as released
            pass
        return super().__getitem__(index)


def collate_encoded(items: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Batch :class:`EncodedDataset` items: the fields of
    :func:`agcam.datasets.common.collate`, except that
    ``input`` is absent; ``pixels`` holds the PIL-decoded items' uint8 images at the positions
    ``pixel_rows`` and ``encoded`` the ``(position, bytes)`` of the others."""
    decoded = [i for i, it in enumerate(items) if "encoded" not in it]
    batch = collate([{**{k: v for k, v in it.items() if k not in ("image", "encoded")},
                      "input": torch.empty(0)} for it in items])
    del batch["input"]
    batch["pixel_rows"] = torch.tensor(decoded, dtype=torch.long)
    batch["pixels"] = torch.stack([items[i]["image"] for i in decoded]) if decoded else None
    batch["encoded"] = [(i, it["encoded"]) for i, it in enumerate(items) if "encoded" in it]
    return batch


def resize_uint8(image: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """``[3, h, w]`` uint8 -> ``[3, H, W]`` uint8: bilinear with antialiasing (PIL's filter for
    downsizing), in float, rounded."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    out = F.interpolate(image[None].float(), size=tuple(int(s) for s in size), mode="bilinear",
                        align_corners=False, antialias=True)
    return out[0].round_().clamp_(0, 255).to(torch.uint8)


def _pil_pixels(data: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """The released PIL decode + resize of a file's bytes (the fallback of a rejected JPEG)."""
    with Image.open(io.BytesIO(data.numpy().tobytes())) as image:
        image = image.convert("RGB")
    image = TF.resize(image, list(size), interpolation=InterpolationMode.BILINEAR)
    return torch.from_numpy(np.array(image, dtype=np.uint8, copy=True)).permute(2, 0, 1)


def decode_batch(batch: Dict[str, Any], device: torch.device, geometry: Geometry,
                 keep_image: bool = False) -> Dict[str, Any]:
    """Fill ``batch["input"]`` (on ``device``, normalised) from a :func:`collate_encoded` batch;
    also ``batch["image"]`` (uint8, CPU) with ``keep_image``. A JPEG that neither the device nor
    PIL can decode is marked invalid with the reason in ``error``, as the PIL path does."""
    count = len(batch["index"])
    height, width = geometry.input_size
    pixels = torch.zeros(count, 3, height, width, dtype=torch.uint8, device=device)
    if batch["pixels"] is not None:
        pixels[batch["pixel_rows"].to(device)] = batch["pixels"].to(device, non_blocking=True)
    encoded = batch["encoded"]
    if encoded:
        datas = [data for _, data in encoded]
        try:
            images = decode_jpeg(datas, mode=ImageReadMode.RGB, device=device)
        except RuntimeError:
            images = [None] * len(datas)   # find the bad one(s) below, one at a time
        for (row, data), image in zip(encoded, images):
            try:
                if image is None:
                    image = decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
                pixels[row] = resize_uint8(image, (height, width))
            except RuntimeError:
                try:
                    pixels[row] = _pil_pixels(data, (height, width)).to(device)
                except Exception as exc:  # noqa: BLE001 - unreadable, as on the PIL path
                    batch["valid"][row] = False
                    batch["error"][row] = f"{type(exc).__name__}: {exc}"
                    batch["boxes"][row] = []
                    batch["size"][row] = 0
    batch["input"] = normalize_images(pixels, geometry.mean, geometry.std)
    if keep_image:
        batch["image"] = pixels.cpu()
    return batch


class DeviceDecoded:
    """Iterate over a loader of :func:`collate_encoded` batches, yielding them decoded on
    ``device`` (:func:`decode_batch`)."""

    def __init__(self, loader: Iterable[Dict[str, Any]], device: torch.device,
                 geometry: Geometry, keep_image: bool = False):
        self.loader = loader
        self.device = torch.device(device)
        self.geometry = geometry
        self.keep_image = keep_image
        self.dataset = getattr(loader, "dataset", None)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Dict[str, Any]]:
        for batch in self.loader:
            yield decode_batch(batch, self.device, self.geometry, self.keep_image)


# -- what the scripts call: one switch between the PIL path and this one ---------------------------
def make_dataset(samples, model_or_geometry, keep_image: bool, decode: str = "pil") -> ValDataset:
    """The dataset of ``--decode pil`` (:class:`~agcam.datasets.common.ValDataset`) or ``gpu``
    (:class:`EncodedDataset`)."""
    if decode not in ("pil", "gpu"):
        raise ValueError(f"decode must be 'pil' or 'gpu', got {decode!r}")
    cls = EncodedDataset if decode == "gpu" else ValDataset
    return cls(samples, model_or_geometry, keep_image=keep_image)


def collate_for(dataset) -> Any:
    """The collate function of ``dataset``'s items."""
    return collate_encoded if isinstance(dataset, EncodedDataset) else collate


def decoded_batches(loader: Iterable[Dict[str, Any]], dataset, device: torch.device):
    """``loader`` itself for the PIL path, its batches decoded on ``device`` for ``gpu``."""
    if not isinstance(dataset, EncodedDataset):
        return loader
    return DeviceDecoded(loader, device, dataset.geometry, keep_image=dataset.return_image)
