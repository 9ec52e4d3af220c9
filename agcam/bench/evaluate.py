"""agcam bench-evaluate: agcam evaluate --eval all against the six separate runs, side by side
(the command's flags: agcam/cli/bench_evaluate.py).

    agcam bench-evaluate [--model vit_agcam_learnt] [--method agcam rollout lrp] [--limit 16]

The six runs a comparison table took before the runner (localization.py --maxboxacc, save_h5.py
for the label and for the predicted class, ABPC.py, perturbation.py with the four tests,
segmentation.py) and the runner's two (agcam evaluate --eval all on the data set, and
--eval segmentation on ImageNet-Segmentation, the data set with masks), each as a whole
process, on the same model, methods and images, in turns. Prints each side's wall time, the
ratio, and whether every number equals (:func:`compare`).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Dict, List

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
#: what the six separate runs compute (the runner's --eval all has more: pointing, SaCo, ...)
SCRIPT_EVALUATIONS = ("localization", "maxboxacc", "abpc", "positive", "negative", "insertion",
                      "deletion")


def _run(command: List[str]) -> float:
    tick = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True)
    seconds = time.perf_counter() - tick
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    return seconds


def model_flags(args) -> List[str]:
    return (["--model", args.model] + (["--checkpoint", args.checkpoint] if args.checkpoint
                                       else []) + (["--device", args.device] if args.device
                                                   else []))


def separate_commands(args, out: str) -> List[List[str]]:
    py = sys.executable
    model = model_flags(args)
    common = [*model, "--method", *args.method, "--no_progress"]
    data = ["--dataset", args.dataset, "--data_root", args.data_root, "--limit",
            str(args.images), "--batch_size", str(args.batch_size), "--num_workers", "0"]
    commands = [
        [py, "localization.py", *common, *data, "--maxboxacc", "--out",
         os.path.join(out, "localization")],
        [py, "save_h5.py", *common, *data, "--out", os.path.join(out, "label")],
        [py, "save_h5.py", *common, *data, "--target", "predicted", "--out",
         os.path.join(out, "predicted")],
        [py, "ABPC.py", *common, "--h5_root", os.path.join(out, "label"), "--file", "True"],
        [py, "perturbation.py", *common, "--h5_root", os.path.join(out, "predicted"), "--test",
         "positive", "negative", "insertion", "deletion", "--file", "True"],
    ]
    if args.seg_root != "none":
        commands.append([py, "segmentation.py", *common, "--data_root", args.seg_root,
                         "--limit", str(args.images), "--batch_size", str(args.batch_size),
                         "--num_workers", "0", "--out", os.path.join(out, "segmentation")])
    return commands


def runner_commands(args, out: str) -> List[List[str]]:
    py = sys.executable
    model = model_flags(args)
    common = [py, "-m", "agcam", "evaluate", *model, "--method", *args.method, "--no_progress",
              "--num_workers", "0", "--limit", str(args.images), "--batch_size",
              str(args.batch_size)]
    commands = [[*common, "--dataset", args.dataset, "--data_root", args.data_root,
                 "--eval", *SCRIPT_EVALUATIONS, "--out", os.path.join(out, "main")]]
    if args.seg_root != "none":
        commands.append([*common, "--dataset", "imagenet_seg", "--data_root", args.seg_root,
                         "--eval", "segmentation", "--out", os.path.join(out, "seg")])
    return commands


def compare(results: Dict, seg_results, files: str, methods: List[str], prefix: str) -> List[str]:
    """The numbers of a runner's ``results.json`` (and of its segmentation run) that differ from
    the separate scripts' files in ``files`` (empty: every one equal, to the bit)."""
    def load(*parts):
        with open(os.path.join(files, *parts), encoding="utf-8") as handle:
            return json.load(handle)

    wrong = []
    for method in methods:
        mine = results["results"][method]
        loc = load("localization", f"localization_{method}.json")
        if mine["localization"]["results"] != loc["results"]:
            wrong.append(f"{method} localization")
        for key in ("maxboxacc", "maxboxacc_v2", "maxboxacc_delta", "maxboxacc_v2_delta"):
            if mine["maxboxacc"][key] != loc[key]:
                wrong.append(f"{method} {key}")
        abpc = load("label", f"{prefix}_{method}_ABPC.json")
        for key in ("lerf", "morf", "abpc"):
            if mine["abpc"][key] != abpc[key]:
                wrong.append(f"{method} abpc {key}")
        perturbation = load("predicted", f"{prefix}_{method}_perturbation.json")
        for test in ("positive", "negative", "insertion", "deletion"):
            for key in ("curve", "auc"):
                if mine[test][key] != perturbation["tests"][test][key]:
                    wrong.append(f"{method} {test} {key}")
        if seg_results is not None:
            seg = load("segmentation", f"segmentation_{method}.json")
            for key in ("pixel_accuracy", "miou", "map"):
                if seg_results["results"][method]["segmentation"][key] != seg[key]:
                    wrong.append(f"{method} segmentation {key}")
    return wrong


def main(args: argparse.Namespace) -> int:
    from agcam.datasets import get_dataset
    from agcam.runtime import resolve_methods

    args.method = resolve_methods(args.method)
    prefix = get_dataset(args.dataset).prefix
    times = {"separate": [], "runner": []}
    mismatches: List[str] = []
    for turn in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            separate, runner = os.path.join(tmp, "separate"), os.path.join(tmp, "runner")
            for side, commands in (("runner", runner_commands(args, runner)),
                                   ("separate", separate_commands(args, separate))):
                times[side].append(sum(_run(c) for c in commands))
            with open(os.path.join(runner, "main", "results.json"), encoding="utf-8") as handle:
                results = json.load(handle)
            seg = None
            if args.seg_root != "none":
                with open(os.path.join(runner, "seg", "results.json"), encoding="utf-8") as h:
                    seg = json.load(h)
            mismatches = compare(results, seg, separate, args.method, prefix)
    runner_s, separate_s = statistics.median(times["runner"]), statistics.median(times["separate"])
    print(f"model {args.model}, {args.images} images of {args.dataset}, methods "
          f"{' '.join(args.method)}, batch {args.batch_size}, {args.repeats} turn(s), "
          f"{os.cpu_count()} CPUs")
    print(f"six separate runs: {separate_s:.1f} s; agcam evaluate (the same evaluations, and "
          f"segmentation on imagenet_seg): {runner_s:.1f} s; ratio {runner_s / separate_s:.3f}")
    print("results: " + ("every number equal to the bit" if not mismatches else
                         "DIFFERENT: " + ", ".join(mismatches)))
    return 0 if not mismatches else 1
