"""Benchmark: LRP (Transformer Attribution) side by side, in one run, in turns (the command's
flags: agcam/cli/bench_lrp.py).

    agcam bench-lrp [--images 12] [--repeats 3] [--threads 2] [--before FILE]
    agcam bench-lrp --whole --data_root DIR --checkpoint FILE --released_command "CMD" [--repeats 1]

In-process (default): on ``--model`` with random weights (nothing downloaded), the plain forward
(``no_grad``, timm's fused attention) of ``--images`` images and our LRP explain of the same batch
are timed in turns within each repeat; LRP is reported as a multiple of the forward, the unit that
stays comparable under another load. ``--before FILE`` adds an older ``baselines/lrp.py`` (e.g.
``git show <commit>:baselines/lrp.py > /tmp/lrp_before.py``) to the turns, loaded from that file
without registering it, and checks that its maps equal ours to the bit.

Whole processes (``--whole``): ``save_h5.py --method lrp`` of this checkout on ``--data_root``
(``--model``, ``--checkpoint``) and ``--released_command``, a shell command that runs the authors'
released ``save_h5.py --method lrp`` on the same images (it lives outside the project, in its own
environment; docs/gpu.md says how it is prepared), run in turns; the wall-clock ratio of each
repeat and their median are printed: the issue's "time of the released code" measure.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Callable, Dict, List

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _load_before(path: str):
    """The ``TransformerAttribution`` class of an older ``baselines/lrp.py``, unregistered."""
    with open(path) as f:
        source = f.read().replace('@register("lrp"', '@(lambda *a, **k: (lambda c: c))("lrp"')
    spec = importlib.util.spec_from_loader("agcam_bench_lrp_before", loader=None)
    module = importlib.util.module_from_spec(spec)
    module.__file__ = path
    sys.modules[spec.name] = module       # dataclasses look their module up
    exec(compile(source, path, "exec"), module.__dict__)
    return module.TransformerAttribution


def bench_in_process(args: argparse.Namespace) -> int:
    import torch

    from agcam.bench.common import random_model, timed
    from agcam.registry import get_explainer
    from models.vit import model_geometry

    model = random_model(args)
    device = next(model.parameters()).device
    torch.manual_seed(1)
    images = torch.randn(args.images, 3, *model_geometry(model).input_size, device=device)
    explainers = {"lrp": get_explainer("lrp", model)}
    if args.before:
        explainers["lrp (before)"] = _load_before(args.before)(model)
        mine, theirs = explainers["lrp"].explain(images), explainers["lrp (before)"].explain(images)
        same = torch.equal(mine.maps, theirs.maps) and torch.equal(mine.predictions,
                                                                   theirs.predictions)
        print(f"maps and predictions of --before equal ours to the bit: {same}", flush=True)

    def forward():
        with torch.no_grad():
            model(images)

    jobs: Dict[str, Callable[[], object]] = {"forward": forward}
    jobs.update({name: (lambda e=e: e.explain(images)) for name, e in explainers.items()})
    samples: Dict[str, List[float]] = {name: [] for name in jobs}
    for repeat in range(args.repeats + 1):         # the first turn warms up
        for name, job in jobs.items():
            elapsed, _ = timed(job, device)
            if repeat:
                samples[name].append(elapsed)
                print(f"turn {repeat}: {name} {samples[name][-1]:.2f} s", flush=True)
    unit = statistics.median(samples["forward"])
    print(f"\n{args.model}, random weights, {args.images} images in one batch, "
          f"{torch.get_num_threads()} threads, median of {args.repeats} turns")
    print("| | s/image | x forward |\n| --- | --- | --- |")
    for name, values in samples.items():
        median = statistics.median(values)
        print(f"| {name} | {median / args.images:.3f} | {median / unit:.2f}x |")
    if args.before:
        ratios = [a / b for a, b in zip(samples["lrp"], samples["lrp (before)"])]
        print(f"lrp / lrp (before), per turn: {', '.join(f'{r:.3f}' for r in ratios)}; "
              f"median {statistics.median(ratios):.3f}")
    return 0


def _run(command, env: dict, shell: bool = False) -> float:
    start = time.perf_counter()
    done = subprocess.run(command, env=env, shell=shell, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{command!r} exited {done.returncode}: {done.stderr[-2000:]}")
    return elapsed


def bench_whole(args: argparse.Namespace) -> int:
    from agcam.errors import UsageError
    for flag in ("data_root", "checkpoint", "released_command"):
        if getattr(args, flag) is None:
            raise UsageError(f"--whole needs --{flag}")
    if not os.path.isdir(args.data_root):
        raise UsageError(f"--data_root {args.data_root}: not a folder")
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    ours: List[float] = []
    released: List[float] = []
    with tempfile.TemporaryDirectory(prefix="agcam_bench_lrp_") as tmp:
        for repeat in range(args.repeats):
            save_root = os.path.join(tmp, f"ours_{repeat}")
            ours.append(_run([sys.executable, os.path.join(ROOT, "save_h5.py"), "--method", "lrp",
                              "--model", args.model, "--checkpoint", args.checkpoint,
                              "--data_root", args.data_root, "--save_root", save_root,
                              "--device", args.device, "--no_progress"], env))
            released.append(_run(args.released_command, env, shell=True))
            print(f"turn {repeat + 1}: ours {ours[-1]:.1f} s, released {released[-1]:.1f} s, "
                  f"ratio {ours[-1] / released[-1]:.3f}", flush=True)
    ratios = [a / b for a, b in zip(ours, released)]
    print(f"save_h5.py --method lrp, whole processes, OMP_NUM_THREADS={args.threads}: ours / "
          f"released, median of {args.repeats}: {statistics.median(ratios):.3f}")
    return 0


def main(args: argparse.Namespace) -> int:
    from agcam.errors import UsageError
    if args.device is None:
        from agcam.runtime import resolve_device
        args.device = str(resolve_device(None))
    if args.repeats < 1 or args.images < 1:
        raise UsageError("--repeats and --images must be at least 1")
    if args.before is not None and not os.path.isfile(args.before):
        raise UsageError(f"--before {args.before}: not a file")
    return bench_whole(args) if args.whole else bench_in_process(args)

