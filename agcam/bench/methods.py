"""Benchmark: seconds per image of the plain forward and of each explainer, side by side.

    agcam bench [--model vit_base_patch16_224] [--batch_sizes 1 8] [--repeats 5]
                [--method agcam lrp rollout attention gae gradcam gradcam_tokens]
                [--abpc_images 8] [--device cuda] [--precision fp32|tf32|bf16]

Random weights (nothing is downloaded). For every batch size the plain forward (``no_grad``,
timm's own fused attention, what a user's inference costs) and every method are timed in turns
within the same repeat, so the ratios compare runs made under the same machine load; the median
of the repeats is reported. The ABPC stage is compared with the released procedure's cost, 22
single-image forward passes per image, measured in the same run.

``--precision`` runs the forward and every method at that precision (:mod:`agcam.precision`); a
method that refuses it (LRP at bf16) is shown as ``refused``. The last table gives images per
second, the figure to compare between machines.
"""
from __future__ import annotations

import argparse
import statistics
from typing import Dict, List

import torch

from agcam.bench.common import random_model, timed
from agcam.precision import precision as precision_context
from agcam.registry import get_explainer, method_class, ordered_methods
from models.vit import model_geometry

REFUSED = "refused"


def bench_methods(model: torch.nn.Module, batch_size: int, methods: List[str], repeats: int,
                  warmup: int = 1, precision: str = "fp32") -> Dict[str, float]:
    """Median seconds per image of ``forward`` and of each method, timed in turns, at
    ``precision`` (the methods that refuse it are left out)."""
    device = next(model.parameters()).device
    images = torch.randn(batch_size, 3, *model_geometry(model).input_size, device=device)
    explainers = {name: get_explainer(name, model, precision=precision) for name in methods
                  if precision in method_class(name).precisions}

    def forward():
        with torch.no_grad(), precision_context(precision, device.type):
            model(images)

    jobs = {"forward": forward}
    jobs.update({name: (lambda e=e: e.explain(images)) for name, e in explainers.items()})
    samples: Dict[str, List[float]] = {name: [] for name in jobs}
    for i in range(warmup + repeats):
        for name, job in jobs.items():
            elapsed, _ = timed(job, device)
            if i >= warmup:
                samples[name].append(elapsed / batch_size)
    return {name: statistics.median(values) for name, values in samples.items()}


def main(args: argparse.Namespace) -> int:
    device = torch.device(args.device)
    if getattr(args, "clip", None):       # the zero-shot classifier of an image-text model
        from agcam.bench.clip import clip_classifier
        model, label = clip_classifier(args), f"{args.clip} (zero-shot classifier of the prompts)"
    else:
        model, label = random_model(args), f"{args.model} (random weights)"
    methods = args.methods or ordered_methods()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"model {label}, device {device} ({name}), precision "
          f"{args.precision}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"median of {args.repeats} repeats", flush=True)
    width = max(len(what) for what in ["forward", *methods])
    print(f"{'batch':>5} {'what':>{width}} {'s/image':>9} {'images/s':>9} {'x forward':>10}")
    table = {}
    for batch_size in args.batch_sizes:
        result = bench_methods(model, batch_size, methods, args.repeats,
                               precision=args.precision)
        table[batch_size] = result
        base = result["forward"]
        for what, seconds in result.items():
            print(f"{batch_size:>5} {what:>{width}} {seconds:>9.4f} {1 / seconds:>9.1f} "
                  f"{seconds / base:>10.2f}", flush=True)
        for what in methods:
            if what not in result:
                print(f"{batch_size:>5} {what:>{width}} {REFUSED:>9} (at {args.precision})")
    print(f"\nimages/s at {args.precision} on {name}:")
    columns = ["forward"] + methods
    print(f"| batch | {' | '.join(columns)} |")
    print("|" + " --- |" * (len(columns) + 1))
    for batch_size, result in table.items():
        cells = [f"{1 / result[c]:.1f}" if c in result else REFUSED for c in columns]
        print(f"| {batch_size} | {' | '.join(cells)} |", flush=True)
    if args.abpc_images:
        try:
            from agcam.bench.abpc import bench_abpc
        except ImportError:
            print("ABPC benchmark not available")
        else:
            batch = max(args.batch_sizes)
            with precision_context(args.precision, device.type):   # both sides alike
                res = bench_abpc(model, n_images=args.abpc_images, batch_size=batch)
            print("ABPC: " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                       for k, v in res.items()), flush=True)
    return 0
