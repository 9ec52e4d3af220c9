"""Benchmark of the perturbation tests: the batched engine against a one-image-at-a-time loop.

For each test (Chefer's positive and negative, RISE's insertion and deletion) and for all four in
one pass, the batched engine (:func:`agcam.evaluation.curves.perturbation_curves`) and a loop
that runs the same test one image and one step at a time, as the original scripts do (a clean
forward pass per image and test, then one single-image forward pass per step), are timed in
turns within each repeat (median over repeats), on random images and heatmaps; the curves of
both are compared.

    agcam bench-perturbation [--model vit_base_patch16_224] [--images 8]
                             [--batch_size 64] [--repeats 1] [--device cpu]
"""
from __future__ import annotations

import argparse
import statistics
from typing import Dict, List

import numpy as np
import torch
from torch import nn

from agcam.bench.abpc import random_batches
from agcam.bench.common import random_model, timed
from agcam.evaluation.curves import PerturbationTest, perturbation_curves
from agcam.evaluation.perturbation import TESTS, make_tests
from agcam.maps import to_heatmap
from models.vit import model_geometry


def loop_curves(model: nn.Module, images: torch.Tensor, heatmaps: torch.Tensor,
                labels: List[int], test: PerturbationTest) -> np.ndarray:
    """``[n, steps]``: ``test`` one image at a time, one single-image forward pass per step plus
    the clean one (its prediction), as Chefer's and RISE's scripts run."""
    device = next(model.parameters()).device
    _, _, height, width = images.shape
    counts = test.steps.counts(height * width)
    out = np.zeros((len(images), len(counts)))
    with torch.inference_mode():
        for i in range(len(images)):
            image = images[i:i + 1].to(device)
            clean = model(image)
            cls = int(clean.argmax()) if test.target == "predicted" else labels[i]
            start = image if test.start is None else test.start.image(image)
            finish = image if test.finish is None else test.finish.image(image)
            masks = test.ranking.masks(heatmaps[i:i + 1], test.most_relevant)
            for step, k in enumerate(counts):
                mask = masks.mask(k).to(device).view(1, 1, height, width)
                logits = model(torch.where(mask, finish, start)).float()
                if test.score == "top1":
                    out[i, step] = float(int(logits.argmax()) == labels[i])
                else:
                    out[i, step] = float(logits.softmax(dim=1)[0, cls])
    return out


def bench_perturbation(model: nn.Module, n_images: int = 8, batch_size: int = 64,
                       repeats: int = 1) -> Dict[str, Dict[str, float]]:
    """Per test (and ``all`` four in one pass): forward passes and seconds per image of the
    batched engine and of the one-image loop, their ratio, and the largest difference between
    their curves (probabilities; top-1 hits differ only where a float tie flips an argmax)."""
    model.eval()
    device = next(model.parameters()).device
    geometry = model_geometry(model)
    batches = random_batches(model, n_images, read_batch=min(32, max(1, batch_size)))
    generator = torch.Generator().manual_seed(1)
    for b in batches:   # random raw maps, made heatmaps by Chefer's recipe
        maps = torch.rand(len(b.names), *geometry.grid, generator=generator)
        b.heatmaps = to_heatmap(maps, geometry.input_size, recipe="chefer")
    images = torch.cat([b.images for b in batches])
    heatmaps = torch.cat([b.heatmaps for b in batches])
    labels = [int(v) for b in batches for v in b.labels]
    tests = make_tests(TESTS, geometry.mean, geometry.std, geometry.input_size[1])

    with torch.inference_mode():    # warm-up
        model(images[:1].to(device))
        model(images[:1].repeat(batch_size, 1, 1, 1).to(device))
    report = {}
    for name, group in [(t.name, [t]) for t in tests] + [("all", tests)]:
        fast, slow = [], []
        batched = reference = None
        for _ in range(max(1, repeats)):
            seconds, reference = timed(
                lambda: {t.name: loop_curves(model, images, heatmaps, labels, t) for t in group},
                device)
            slow.append(seconds / n_images)
            seconds, batched = timed(
                lambda: perturbation_curves(model, batches, group, batch_size=batch_size), device)
            fast.append(seconds / n_images)
        loop_passes = sum(1 + len(t.steps.counts(heatmaps[0].numel())) for t in group)
        report[name] = {
            "forward_passes_per_image": batched.forward_passes / n_images,
            "loop_forward_passes_per_image": float(loop_passes),
            "seconds_per_image": statistics.median(fast),
            "loop_seconds_per_image": statistics.median(slow),
            "ratio_to_loop": statistics.median(fast) / statistics.median(slow),
            "max_abs_difference_to_loop": max(
                float(np.abs(batched.curves[t.name] - reference[t.name]).max()) for t in group),
        }
    return report


def main(args: argparse.Namespace) -> int:
    model = random_model(args)
    print(f"model {args.model} (random weights), device {args.device}, torch threads "
          f"{torch.get_num_threads()}, {args.images} images, batch size {args.batch_size}",
          flush=True)
    report = bench_perturbation(model, args.images, args.batch_size, args.repeats)
    print(f"{'test':<10} {'passes':>7} {'loop':>7} {'s/img':>9} {'loop s/img':>11} "
          f"{'ratio':>7} {'max diff':>9}")
    for name, r in report.items():
        print(f"{name:<10} {r['forward_passes_per_image']:>7.2f} "
              f"{r['loop_forward_passes_per_image']:>7.0f} {r['seconds_per_image']:>9.4f} "
              f"{r['loop_seconds_per_image']:>11.4f} {r['ratio_to_loop']:>7.3f} "
              f"{r['max_abs_difference_to_loop']:>9.2e}")
    return 0
