"""ABPC, the area between the perturbation curves (the paper's faithfulness evaluation), batched:
a setting of the perturbation engine (:func:`abpc_tests`, :mod:`agcam.evaluation.curves`).

For an image ``x`` (normalised model input), its heatmap ``m`` (``H x W``) and label ``y``: at
step ``f = i / 10``, ``i = 0..10``, ``k = int(H * W * f)`` pixels are set to 0 in every channel
of ``x`` (0 in normalised space: mid-grey for mean = std = 0.5); MoRF removes the ``k`` pixels
with the highest ``m``, LeRF the ``k`` with the lowest; the curve value is the softmax
probability of ``y``. AUC(LeRF) and AUC(MoRF) are the means over steps of the means over images;
ABPC is the mean over images and steps of LeRF - MoRF (higher is better).

Ranking, as released, to the bit. The released numbers are reproduced (every image and step of
the reference, three methods) by ``torch.topk(m + 1, k)`` on the flattened float32 heatmap, one
call per step (``largest=True`` for MoRF, ``False`` for LeRF), on the CPU:

- ``+ 1`` puts every value on the float32 grid of [1, 2), 2^-23 wide: heatmap values closer
  than that become ties, as in the released ranking; ranking the raw heatmap instead departs
  from some released curve values (docs/faithfulness.md).
- Ties are broken by ``topk`` itself, separately for each ``k`` (the removed sets of two steps
  are not always nested). Its order is that of the CPU kernel, so the ranking is always done on
  the CPU, whatever device runs the model; ``sorted=False`` selects the same set, faster.

Batching: step 0.0 is the unperturbed image for both curves (one forward pass) and step 1.0 is
the all-zero image, the same for every image (one forward pass for the whole run); the other
9 x 2 perturbed images of every image go through the model in batches of ``batch_size``, mixed
across steps and images. 19 forward passes an image instead of the released 22 single-image
ones, each computing the last block for the class token only
(:func:`models.inference.class_token_logits`: the same probabilities to float rounding).
"""
from __future__ import annotations

import csv
import json
import os
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from agcam.evaluation.curves import (
    CurveResults,
    NormalizedConstant,
    PerturbationTest,
    Ranking,
    Steps,
    perturbation_curves,
)

NUM_STEPS = 11
#: the removed fractions 0.0, 0.1, ..., 1.0
STEPS: Tuple[float, ...] = tuple(i / (NUM_STEPS - 1) for i in range(NUM_STEPS))
#: added to the heatmap before ranking (see the module docstring)
RANK_OFFSET = 1.0
MORF, LERF = 0, 1     # row order of the benchmark's [2, NUM_STEPS] curves


def pixel_counts(num_pixels: int, steps: Sequence[float] = STEPS) -> List[int]:
    """``k = int(H * W * f)`` for each step ``f`` (5017, 10035, 15052, ... for 224 x 224)."""
    return [int(num_pixels * f) for f in steps]


def abpc_tests() -> List[PerturbationTest]:
    """ABPC as settings of the perturbation engine: MoRF and LeRF, steps :data:`STEPS`, the
    released ``topk(m + 1)`` ranking, removed pixels set to 0 in normalised space, scored by the
    softmax probability of the label."""
    ranking = Ranking("topk", offset=RANK_OFFSET)
    return [PerturbationTest(name, Steps(fractions=STEPS), most_relevant=name == "morf",
                             ranking=ranking, start=None, finish=NormalizedConstant(0.0),
                             score="probability", target="label")
            for name in ("morf", "lerf")]


def removal_mask(heatmaps: torch.Tensor, k: int, most_relevant: bool) -> torch.Tensor:
    """``[B, H*W]`` bool: the ``k`` pixels of each heatmap that MoRF (``most_relevant``) or LeRF
    removes, ranked as released (module docstring). ``heatmaps``: ``[B, H*W]`` float32, CPU."""
    return Ranking("topk", offset=RANK_OFFSET).masks(heatmaps, most_relevant).mask(k)


def perturb(images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Set the masked pixels (``[B, H*W]``) to 0 in every channel of ``[B, C, H, W]`` images."""
    batch, _, height, width = images.shape
    return images.masked_fill(mask.to(images.device).view(batch, 1, height, width), 0.0)


def abpc_results(names: Sequence[str], labels: Sequence[int], lerf, morf,
                 indices: Optional[Sequence[int]] = None) -> CurveResults:
    """Per-image LeRF and MoRF curves (``[n, NUM_STEPS]``) as the engine's one result type,
    :class:`agcam.evaluation.curves.CurveResults` (``results.lerf``, ``results.morf``)."""
    lerf = np.asarray(lerf, dtype=np.float64).reshape(len(names), NUM_STEPS)
    morf = np.asarray(morf, dtype=np.float64).reshape(len(names), NUM_STEPS)
    return CurveResults(tests=abpc_tests(), names=list(names), labels=list(labels),
                        curves={"lerf": lerf, "morf": morf},
                        positions={"lerf": list(STEPS), "morf": list(STEPS)}, counts={},
                        indices=list(indices) if indices is not None else
                        list(range(len(names))))


def abpc_curves(model: nn.Module, batches: Iterable, batch_size: int = 64,
                progress: bool = False, total: Optional[int] = None,
                precision: str = "fp32") -> CurveResults:
    """LeRF and MoRF curves of every image in ``batches``: :func:`abpc_tests` run by
    :func:`agcam.evaluation.curves.perturbation_curves`.

    ``batches`` yields objects with ``names``, ``labels`` ``[B]``, ``images`` ``[B, 3, H, W]``
    (normalised model input) and ``heatmaps`` ``[B, H, W]`` (e.g.
    :meth:`agcam.store.StoreReader.batches`), and optionally ``indices``. ``batch_size`` is the
    number of perturbed images per forward pass; ``precision`` that of the forward passes
    (:mod:`agcam.precision`; the probabilities are float32 either way). The clean image goes
    through the queue with the perturbed ones (no separate clean pass), step by step, MoRF
    before LeRF: the same batches, hence the same bits, as before the engine.
    """
    return perturbation_curves(model, batches, abpc_tests(), batch_size=batch_size,
                               precision=precision, clean_forward=False, progress=progress,
                               total=total, desc="ABPC")


def summarize(curves: CurveResults, method: str, dataset: str = "ilsvrc", prefix: str = "ILSVRC"
              ) -> Dict[str, object]:
    """The released summaries: mean curves, AUC(LeRF), AUC(MoRF) (means over steps of the means
    over images) and ABPC (mean over images and steps of LeRF - MoRF). ``dataset`` and its file
    ``prefix`` name the outputs (:func:`output_paths`)."""
    if curves.num_images == 0:
        raise ValueError("no images to summarise")
    lerf_curve = curves.lerf.mean(axis=0)
    morf_curve = curves.morf.mean(axis=0)
    return {
        "method": method,
        "dataset": dataset,
        "prefix": prefix,
        "num_images": curves.num_images,
        "steps": [float(s) for s in STEPS],
        "lerf": [float(v) for v in lerf_curve],
        "morf": [float(v) for v in morf_curve],
        "auc_lerf": float(lerf_curve.mean()),
        "auc_morf": float(morf_curve.mean()),
        "abpc": float((curves.lerf - curves.morf).mean()),
    }


def report_lines(summary: Dict[str, object]) -> List[str]:
    """What ``ABPC.py`` prints: the mean curves per step, the two AUCs and ABPC."""
    lines = [f"method: {summary['method']}", f"number of images: {summary['num_images']}",
             f"{'step':>4} {'removed':>7} {'LeRF':>10} {'MoRF':>10}"]
    for i, (f, lerf, morf) in enumerate(zip(summary["steps"], summary["lerf"],
                                            summary["morf"])):
        lines.append(f"{i:>4} {f:>7.1f} {lerf:>10.6f} {morf:>10.6f}")
    lines += [f"AUC(LeRF): {summary['auc_lerf']:.6f}",
              f"AUC(MoRF): {summary['auc_morf']:.6f}",
              f"ABPC: {summary['abpc']:.6f}"]
    return lines


def table_lines(summaries: List[Dict[str, object]]) -> List[str]:
    """What ``ABPC.py`` prints for several methods: a row per method with its number of images,
    AUC(LeRF), AUC(MoRF) and ABPC."""
    width = max([len("method")] + [len(str(s["method"])) for s in summaries])
    lines = [f"{'method':<{width}} {'images':>6} {'AUC(LeRF)':>10} {'AUC(MoRF)':>10} "
             f"{'ABPC':>10}"]
    lines += [f"{s['method']:<{width}} {s['num_images']:>6} {s['auc_lerf']:>10.6f} "
              f"{s['auc_morf']:>10.6f} {s['abpc']:>10.6f}" for s in summaries]
    return lines


def output_paths(directory: str, method: str, prefix: str = "ILSVRC") -> Dict[str, str]:
    stem = os.path.join(directory, f"{prefix}_{method}_ABPC")
    return {kind: f"{stem}.{kind}" for kind in ("txt", "json", "csv", "png")}


def write_report(directory: str, summary: Dict[str, object]) -> List[str]:
    """``--file True``: ``<prefix>_<method>_ABPC.txt`` (the printed report) and ``.json``."""
    paths = output_paths(directory, str(summary["method"]), str(summary.get("prefix", "ILSVRC")))
    with open(paths["txt"], "w") as handle:
        handle.write("\n".join(report_lines(summary)) + "\n")
    keys = ("method", "dataset", "num_images", "steps", "lerf", "morf", "auc_lerf", "auc_morf",
            "abpc")
    with open(paths["json"], "w") as handle:
        json.dump({k: summary[k] for k in keys if k in summary}, handle, indent=2)
        handle.write("\n")
    return [paths["txt"], paths["json"]]


def write_csv(directory: str, curves: CurveResults, summary: Dict[str, object]) -> List[str]:
    """``--csv True``: one row per image (name, label, LeRF and MoRF per step, ABPC) and a PNG of
    the mean curves with the area between them shaded."""
    paths = output_paths(directory, str(summary["method"]), str(summary.get("prefix", "ILSVRC")))
    steps = [f"{s:.1f}" for s in STEPS]
    with open(paths["csv"], "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["name", "label"] + [f"lerf_{s}" for s in steps]
                        + [f"morf_{s}" for s in steps] + ["abpc"])
        for i, name in enumerate(curves.names):
            writer.writerow([name, curves.labels[i]] + [repr(float(v)) for v in curves.lerf[i]]
                            + [repr(float(v)) for v in curves.morf[i]]
                            + [repr(float((curves.lerf[i] - curves.morf[i]).mean()))])
    plot_curves(summary, paths["png"])
    return [paths["csv"], paths["png"]]


def plot_curves(summary: Dict[str, object], path: str) -> None:
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    steps = np.asarray(summary["steps"])
    lerf, morf = np.asarray(summary["lerf"]), np.asarray(summary["morf"])
    fig, ax = plt.subplots(figsize=(5, 4), dpi=100)
    try:
        ax.plot(steps, lerf, "o-", color="tab:blue",
                label=f"LeRF (AUC {summary['auc_lerf']:.4f})")
        ax.plot(steps, morf, "s-", color="tab:red",
                label=f"MoRF (AUC {summary['auc_morf']:.4f})")
        ax.fill_between(steps, morf, lerf, color="tab:purple", alpha=0.2,
                        label=f"ABPC {summary['abpc']:.4f}")
        ax.set_xlabel("fraction of pixels removed")
        ax.set_ylabel("probability of the label")
        ax.set_title(f"{summary['method']}: {summary['num_images']} images")
        ax.set_xlim(0, 1)
        ax.set_ylim(bottom=0)
        ax.legend()
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)


# -- the evaluation interface (agcam.evaluation.base) ---------------------------------------------

from agcam.evaluation.base import Column, CurveEvaluation, Needs, register_evaluation  # noqa: E402


@register_evaluation
class ABPC(CurveEvaluation):
    """The paper's faithfulness measure as ``save_h5.py`` + ``ABPC.py`` compute it: the map of
    the label class, the released antialiased heatmap, 0%..100% of the pixels removed least /
    most relevant first, the softmax probability of the label."""

    name = "abpc"
    label = "ABPC"
    recipe = "abpc"
    needs = Needs(target="label", rescoring=True, labels=True)
    columns = (Column("abpc", "ABPC"), Column("auc_lerf", "AUC(LeRF)"),
               Column("auc_morf", "AUC(MoRF)", higher_is_better=False))
    curve_keys = ("lerf", "morf")
    convention = ("map of the label class, antialiased resize + min-max (released save_h5.py); "
                  "0%..100% of the pixels removed, least / most relevant first; probability of "
                  "the label; ABPC = mean(LeRF - MoRF)")

    def tests(self, geometry) -> list:
        return abpc_tests()

    def records_from(self, results, rows) -> List[Dict[str, object]]:
        return [{"lerf": [float(v) for v in results.curves["lerf"][row]],
                 "morf": [float(v) for v in results.curves["morf"][row]]} for row in rows]

    def summarize(self, records, context) -> Dict[str, object]:
        curves = abpc_results(context["names"], context["labels"],
                              [r["lerf"] for r in records], [r["morf"] for r in records])
        return summarize(curves, context["method"], context.get("dataset", "ilsvrc"),
                         context.get("prefix", "ILSVRC"))
