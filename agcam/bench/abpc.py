"""Benchmark: batched ABPC against the released one-image loop, side by side.

The batched stage is :mod:`agcam.evaluation.abpc`.

The released ``ABPC.py`` runs 22 single-image forward passes per image (11 steps x LeRF/MoRF).
:func:`bench_abpc` times both in the same run, in turns, on random images and heatmaps, and
checks that they give the same curves. Called by ``agcam bench``; on its own:

    agcam bench-abpc [--model vit_base_patch16_224] [--images 8] [--batch_size 8]
"""
from __future__ import annotations

import argparse
import statistics
from dataclasses import dataclass
from typing import Dict, List

import numpy as np
import torch
from torch import nn

from agcam.bench.common import random_model, timed
from agcam.datasets.common import normalize_images
from agcam.evaluation.abpc import (
    LERF,
    MORF,
    NUM_STEPS,
    abpc_curves,
    perturb,
    pixel_counts,
    removal_mask,
)
from agcam.store import heatmaps_from_maps
from models.vit import model_geometry


@dataclass
class _Batch:
    indices: List[int]
    names: List[str]
    labels: torch.Tensor
    images: torch.Tensor
    heatmaps: torch.Tensor


def released_curves(model: nn.Module, image: torch.Tensor, heatmap: torch.Tensor, label: int
                    ) -> np.ndarray:
    """The released procedure for one image: ``[2, NUM_STEPS]`` (MoRF, LeRF), 22 single-image
    forward passes."""
    device = next(model.parameters()).device
    height, width = image.shape[-2:]
    keys = heatmap.reshape(1, -1)
    out = np.zeros((2, NUM_STEPS))
    with torch.inference_mode():
        for curve in (MORF, LERF):
            for step, k in enumerate(pixel_counts(height * width)):
                mask = removal_mask(keys, k, most_relevant=curve == MORF)
                x = perturb(image[None].to(device), mask)
                out[curve, step] = float(model(x).float().softmax(dim=1)[0, label])
    return out


def random_batches(model: nn.Module, n_images: int, read_batch: int, seed: int = 0
                   ) -> List[_Batch]:
    """Random 8-bit images, normalised as the model expects, and random heatmaps."""
    geometry = model_geometry(model)
    generator = torch.Generator().manual_seed(seed)
    height, width = geometry.input_size
    num_classes = int(getattr(model, "num_classes", 1000))
    batches = []
    for start in range(0, n_images, read_batch):
        count = min(read_batch, n_images - start)
        u8 = torch.randint(0, 256, (count, 3, height, width), generator=generator,
                           dtype=torch.uint8)
        maps = torch.rand(count, *geometry.grid, generator=generator)
        batches.append(_Batch(indices=list(range(start, start + count)),
                              names=[f"random_{i}" for i in range(start, start + count)],
                              labels=torch.randint(0, num_classes, (count,), generator=generator),
                              images=normalize_images(u8, geometry.mean, geometry.std),
                              heatmaps=heatmaps_from_maps(maps, (height, width))))
    return batches


def bench_abpc(model: nn.Module, n_images: int = 8, batch_size: int = 8, repeats: int = 1,
               baseline_images: int = 2) -> Dict[str, float]:
    """Seconds per image of the batched ABPC and of the released 22 single-image forward passes.

    Both are timed in turns within each repeat (median over repeats), so the ratio compares runs
    made under the same machine load. ``batch_size`` is the number of perturbed images per
    forward pass. The baseline runs on the first ``baseline_images`` images (it costs the same
    for every image).
    """
    model.eval()
    device = next(model.parameters()).device
    batches = random_batches(model, n_images, read_batch=max(1, batch_size))
    baseline_images = max(1, min(baseline_images, n_images))
    first = [(b.images[i], b.heatmaps[i], int(b.labels[i])) for b in batches
             for i in range(len(b.names))][:baseline_images]

    # warm-up: one single-image and one batched forward
    with torch.inference_mode():
        model(first[0][0][None].to(device))
        model(batches[0].images[:1].repeat(max(1, batch_size), 1, 1, 1).to(device))
    abpc_times, base_times = [], []
    curves = reference = None
    for _ in range(max(1, repeats)):
        seconds, reference = timed(lambda: [released_curves(model, *item) for item in first],
                                   device)
        base_times.append(seconds / len(first))
        seconds, curves = timed(lambda: abpc_curves(model, batches, batch_size=batch_size),
                                device)
        abpc_times.append(seconds / n_images)
    ours = np.stack([np.stack([curves.morf[i], curves.lerf[i]]) for i in range(len(first))])
    seconds = statistics.median(abpc_times)
    baseline = statistics.median(base_times)
    return {
        "seconds_per_image": seconds,
        "forward_passes_per_image": curves.forward_passes / n_images,
        "baseline_seconds_per_image_22_single_forwards": baseline,
        "ratio_to_baseline": seconds / baseline,
        "max_abs_difference_to_baseline": float(np.abs(ours - np.stack(reference)).max()),
        "n_images": n_images,
        "batch_size": batch_size,
    }


def main(args: argparse.Namespace) -> int:
    model = random_model(args)
    print(f"model {args.model} (random weights), device {args.device}, torch threads "
          f"{torch.get_num_threads()}", flush=True)
    result = bench_abpc(model, args.images, args.batch_size, args.repeats, args.baseline_images)
    for key, value in result.items():
        print(f"{key}: {value:.4g}" if isinstance(value, float) else f"{key}: {value}")
    return 0
