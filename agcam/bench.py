"""Benchmark: seconds per image of the plain forward and of each explainer, side by side.

    python -m agcam.bench [--model vit_base_patch16_224] [--batch_sizes 1 8] [--repeats 5]
                          [--methods agcam lrp rollout attention gae gradcam gradcam_tokens]
                          [--abpc_images 8]

Random weights (nothing is downloaded). For every batch size the plain forward (``no_grad``,
timm's own fused attention, what a user's inference costs) and every method are timed in turns
within the same repeat, so the ratios compare runs made under the same machine load; the median
of the repeats is reported. The ABPC stage is compared with the released procedure's cost, 22
single-image forward passes per image, measured in the same run.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Callable, Dict, List

import torch

from agcam.cli import ordered_methods
from agcam.registry import get_explainer
from models.vit import create_model, model_geometry


def _timed(fn: Callable[[], object], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def bench_methods(model: torch.nn.Module, batch_size: int, methods: List[str], repeats: int,
                  warmup: int = 1) -> Dict[str, float]:
    """Median seconds per image of ``forward`` and of each method, timed in turns."""
    device = next(model.parameters()).device
    images = torch.randn(batch_size, 3, *model_geometry(model).input_size, device=device)
    explainers = {name: get_explainer(name, model) for name in methods}

    def forward():
        with torch.no_grad():
            model(images)

    jobs = {"forward": forward}
    jobs.update({name: (lambda e=e: e.explain(images)) for name, e in explainers.items()})
    samples: Dict[str, List[float]] = {name: [] for name in jobs}
    for i in range(warmup + repeats):
        for name, job in jobs.items():
            elapsed = _timed(job, device)
            if i >= warmup:
                samples[name].append(elapsed / batch_size)
    return {name: statistics.median(values) for name, values in samples.items()}


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser("AGCAM benchmark", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="vit_base_patch16_224")
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--methods", nargs="+", default=None,
                        help="default: every registered method, the paper's three first")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--abpc_images", type=int, default=8,
                        help="images for the ABPC benchmark (0 skips it)")
    return parser


def main(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    model = create_model(args.model, pretrained=False, device=device)
    methods = args.methods or ordered_methods()
    print(f"model {args.model} (random weights), device {device}, "
          f"torch threads {torch.get_num_threads()}, median of {args.repeats} repeats", flush=True)
    width = max(len(name) for name in ["forward", *methods])
    print(f"{'batch':>5} {'what':>{width}} {'s/image':>9} {'x forward':>10}")
    for batch_size in args.batch_sizes:
        result = bench_methods(model, batch_size, methods, args.repeats)
        base = result["forward"]
        for name, seconds in result.items():
            print(f"{batch_size:>5} {name:>{width}} {seconds:>9.4f} {seconds / base:>10.2f}",
                  flush=True)
    if args.abpc_images:
        try:
            from agcam.bench_abpc import bench_abpc
        except ImportError:
            print("ABPC benchmark not available")
        else:
            batch = max(args.batch_sizes)
            res = bench_abpc(model, n_images=args.abpc_images, batch_size=batch)
            print("ABPC: " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                       for k, v in res.items()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
