"""Chefer's perturbation test and RISE's insertion/deletion, as settings of the perturbation engine
(:mod:`agcam.evaluation.curves`), with their summaries, tables and files.

**Chefer et al. (CVPR 2021)**, ``baselines/ViT/pertubation_eval_from_hdf5.py`` of
hila-chefer/Transformer-Explainability: the heatmap is the raw map upsampled x patch size
(bilinear, ``align_corners=False``) and min-max normalised (:data:`agcam.maps.RECIPES`
``"chefer"``); at p = 0.1, ..., 0.9, ``k = int(H * W * p)`` pixels are set to 0 in [0, 1] space
(black) in every channel, each step from a clean copy, then the image is normalised; *positive*
removes the most relevant pixels first, *negative* the least; the score is top-1 accuracy
against the ground-truth label; the clean accuracy is reported apart. The script prints the
accuracies only; the AUC is a named convention (:func:`agcam.evaluation.curves.chefer_auc`),
x 100.

**Petsiuk et al. (BMVC 2018)**, ``evaluation.py`` (``CausalMetric``) of eclique/RISE, on the same
heatmap: the class is the model's top-1 on the clean image, the score its softmax probability;
pixels in descending heatmap order, ``stride`` at a time (RISE's 224 * 8: eight rows), from none
to all changed; *deletion* goes from the image to 0 in normalised space, *insertion* from the
image blurred with RISE's ``gkern(11, 5)`` to the image; AUC = (sum a - a0/2 - a_last/2) /
(len - 1) of the mean curve.
"""
from __future__ import annotations

import csv
import json
import os
from typing import Dict, Iterator, List, Optional, Sequence

import numpy as np
import torch

from agcam.evaluation.curves import (
    CHEFER_AUC,
    Blur,
    CurveResults,
    NormalizedConstant,
    PerturbationTest,
    Ranking,
    Steps,
    UnitConstant,
    chefer_auc,
    rise_auc,
)
from agcam.evaluation.names import NEEDED_TARGET, TESTS  # noqa: F401  (re-exported)
from agcam.maps import to_heatmap

CHEFER_TESTS = ("positive", "negative")
RISE_TESTS = ("insertion", "deletion")
#: Chefer's removed fractions
CHEFER_STEPS = tuple(i / 10 for i in range(1, 10))
#: RISE's step, in image rows (224 * 8 pixels for a 224-wide input)
RISE_STEP_ROWS = 8
HEATMAP_RECIPE = "chefer"


def chefer_test(name: str, mean: Sequence[float], std: Sequence[float]) -> PerturbationTest:
    """Chefer's ``positive`` or ``negative`` test. Each step ranks with its own ``topk`` call, as
    the script does (``topk(-vis)`` there for negative; ``topk(vis, largest=False)`` here: the
    same set up to ties)."""
    if name not in CHEFER_TESTS:
        raise ValueError(f"Chefer's tests are {CHEFER_TESTS}, not {name!r}")
    return PerturbationTest(name, Steps(fractions=CHEFER_STEPS),
                            most_relevant=name == "positive", ranking=Ranking("topk"),
                            start=None, finish=UnitConstant(tuple(mean), tuple(std), 0.0),
                            score="top1", target="label")


def rise_test(name: str, stride: int) -> PerturbationTest:
    """RISE's ``insertion`` or ``deletion`` with ``stride`` pixels a step. One descending order
    per image (ties: lower pixel index first; RISE's ``np.flip(np.argsort(.))`` leaves them to
    NumPy's quicksort)."""
    if name == "deletion":
        return PerturbationTest(name, Steps(stride=stride), most_relevant=True,
                                ranking=Ranking("sort"), start=None,
                                finish=NormalizedConstant(0.0), score="probability",
                                target="predicted")
    if name == "insertion":
        return PerturbationTest(name, Steps(stride=stride), most_relevant=True,
                                ranking=Ranking("sort"), start=Blur(11, 5.0), finish=None,
                                score="probability", target="predicted")
    raise ValueError(f"RISE's tests are {RISE_TESTS}, not {name!r}")


def make_tests(names: Sequence[str], mean: Sequence[float], std: Sequence[float],
               width: int, rise_step: Optional[int] = None) -> List[PerturbationTest]:
    """The engine settings of ``names`` for images ``width`` pixels wide (``rise_step`` pixels a
    RISE step; default eight rows)."""
    stride = rise_step if rise_step is not None else RISE_STEP_ROWS * int(width)
    out = []
    for name in names:
        if name in CHEFER_TESTS:
            out.append(chefer_test(name, mean, std))
        elif name in RISE_TESTS:
            out.append(rise_test(name, stride))
        else:
            raise ValueError(f"unknown test {name!r}; the tests are {', '.join(TESTS)}")
    return out


def heatmap_batches(store, batch_size: int, mean: Sequence[float], std: Sequence[float],
                    indices: Optional[Sequence[int]] = None) -> Iterator:
    """The store's batches with Chefer's heatmap recomputed from the raw maps (compact layout);
    the released layout keeps no raw map, only its antialiased heatmap, which is used as is."""
    for batch in store.batches(batch_size, mean, std, indices):
        if store.layout == "compact":
            maps = torch.from_numpy(store.raw_maps(batch.indices))
            batch.heatmaps = to_heatmap(maps, store.image_size, recipe=HEATMAP_RECIPE)
        yield batch


# ------------------------------------------------------------------------------ summaries

def summarize(results: CurveResults, method: str, target: str, dataset: str = "ilsvrc",
              prefix: str = "ILSVRC", auc_convention: str = "sklearn_0_1") -> Dict[str, object]:
    """The JSON summary: ``curve`` is the mean over images at each entry of ``steps``."""
    if results.num_images == 0:
        raise ValueError("no images to summarise")
    if auc_convention not in CHEFER_AUC:
        raise ValueError(f"AUC convention must be one of {CHEFER_AUC}, got {auc_convention!r}")
    clean = float(np.mean(results.clean_correct)) if results.clean_correct and \
        min(results.clean_correct) >= 0 else None
    tests = {}
    for test in results.tests:
        curve = results.curves[test.name].mean(axis=0)
        steps = results.positions[test.name]
        entry = {"steps": steps, "pixels": results.counts[test.name],
                 "curve": [float(v) for v in curve]}
        if test.name in CHEFER_TESTS:
            entry.update({
                "auc": chefer_auc(curve, steps, clean, auc_convention),
                "auc_convention": auc_convention,
                "auc_all_conventions": {c: chefer_auc(curve, steps, clean, c)
                                        for c in CHEFER_AUC},
                "auc_scale": 100, "score": "top-1 accuracy against the label",
                "removed": "most relevant removed first" if test.most_relevant else
                "least relevant removed first", "substrate": "0 in [0, 1] space (black)"})
        else:
            entry.update({
                "auc": rise_auc(curve), "auc_convention": "rise",
                "auc_scale": 1,
                "score": "softmax probability of the predicted class",
                "substrate": ("blurred image, gkern(11, 5)" if test.name == "insertion"
                              else "0 in normalised space")})
        tests[test.name] = entry
    return {"method": method, "dataset": dataset, "prefix": prefix, "target": target,
            "num_images": results.num_images, "clean_accuracy": clean,
            "heatmap": HEATMAP_RECIPE, "tests": tests}


def table_lines(summaries: List[Dict[str, object]], test: str) -> List[str]:
    """One table for ``test``, a row per method."""
    if not summaries:
        return []
    entry0 = summaries[0]["tests"][test]
    width = max([len("method")] + [len(str(s["method"])) for s in summaries])
    if test in CHEFER_TESTS:
        title = (f"{test} perturbation (Chefer et al. 2021): top-1 accuracy, "
                 f"{entry0['removed']}; AUC x 100 ({entry0['auc_convention']})")
        head = f"{'method':<{width}} {'target':>9} {'images':>6} {'clean':>7} {'AUC':>8}  " + \
            " ".join(f"{p:>5.1f}" for p in entry0["steps"])
        rows = [f"{s['method']:<{width}} {s['target']:>9} {s['num_images']:>6} "
                f"{s['clean_accuracy']:>7.4f} {s['tests'][test]['auc']:>8.3f}  "
                + " ".join(f"{v:>5.3f}" for v in s["tests"][test]["curve"])
                for s in summaries]
    else:
        title = (f"{test} (Petsiuk et al. 2018, RISE): probability of the predicted class, "
                 f"{len(entry0['steps'])} steps of {entry0['pixels'][1]} pixels; AUC")
        head = f"{'method':<{width}} {'target':>9} {'images':>6} {'AUC':>8} {'first':>7} " \
               f"{'last':>7}"
        rows = [f"{s['method']:<{width}} {s['target']:>9} {s['num_images']:>6} "
                f"{s['tests'][test]['auc']:>8.5f} {s['tests'][test]['curve'][0]:>7.4f} "
                f"{s['tests'][test]['curve'][-1]:>7.4f}" for s in summaries]
    return [title, head] + rows


def output_paths(directory: str, method: str, prefix: str = "ILSVRC") -> Dict[str, str]:
    stem = os.path.join(directory, f"{prefix}_{method}_perturbation")
    return {kind: f"{stem}.{kind}" for kind in ("json", "csv")}


def write_json(directory: str, summary: Dict[str, object]) -> str:
    """``<PREFIX>_<method>_perturbation.json``."""
    path = output_paths(directory, str(summary["method"]), str(summary["prefix"]))["json"]
    keys = ("method", "dataset", "target", "num_images", "clean_accuracy", "heatmap", "tests")
    with open(path, "w") as handle:
        json.dump({k: summary[k] for k in keys}, handle, indent=2)
        handle.write("\n")
    return path


def write_csv(directory: str, results: CurveResults, summary: Dict[str, object]) -> str:
    """``<PREFIX>_<method>_perturbation.csv``: a row per image, the value of every test at every
    step (columns ``<test>_<pixels changed>``)."""
    path = output_paths(directory, str(summary["method"]), str(summary["prefix"]))["csv"]
    names = [t.name for t in results.tests]
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["name", "label", "prediction", "clean_correct"]
                        + [f"{n}_{k}" for n in names for k in results.counts[n]])
        for i, name in enumerate(results.names):
            writer.writerow([name, results.labels[i], results.predictions[i],
                             results.clean_correct[i]]
                            + [repr(float(v)) for n in names for v in results.curves[n][i]])
    return path


# -- the evaluation interface (agcam.evaluation.base) ---------------------------------------------

from agcam.evaluation.base import Column, CurveEvaluation, Needs, register_evaluation  # noqa: E402

#: an insertion curve that starts above this mean probability starts from a blurred image the
#: model already recognises: the test then measures little (warned in the summary)
INSERTION_START_WARNING = 0.5


class PerturbationEvaluation(CurveEvaluation):
    """One of Chefer's or RISE's tests, on the map of the predicted class (Chefer's "top"
    variant; RISE's class), heatmap recipe ``chefer``. Options: ``auc`` (Chefer's AUC
    convention, default ``sklearn_0_1``), ``rise_step`` (pixels per RISE step)."""

    recipe = HEATMAP_RECIPE
    needs = Needs(target="predicted", rescoring=True, labels=True)
    curve_keys = ("curve",)

    def __init__(self, auc: str = "sklearn_0_1", rise_step: Optional[int] = None, **options):
        super().__init__(**options)
        if auc not in CHEFER_AUC:
            raise ValueError(f"AUC convention must be one of {CHEFER_AUC}, got {auc!r}")
        self.auc = auc
        self.rise_step = rise_step

    def describe(self) -> str:
        if self.name in CHEFER_TESTS:
            return (f"Chefer et al. 2021: top-1 accuracy as the "
                    f"{'most' if self.name == 'positive' else 'least'} relevant pixels "
                    f"are blacked out, 10%..90%; map of the predicted class; AUC x 100 "
                    f"({self.auc})")
        return (f"RISE (Petsiuk et al. 2018): probability of the predicted class as pixels are "
                f"{'inserted into a blurred image' if self.name == 'insertion' else 'deleted'}"
                ", most relevant first; AUC")

    def tests(self, geometry) -> list:
        return make_tests([self.name], geometry.mean, geometry.std, geometry.input_size[1],
                          self.rise_step)

    def records_from(self, results: CurveResults, rows) -> List[Dict[str, object]]:
        return [{"curve": [float(v) for v in results.curves[self.name][row]],
                 "clean_correct": int(results.clean_correct[row]),
                 "prediction": int(results.predictions[row])} for row in rows]

    def summarize(self, records, context) -> Dict[str, object]:
        test = self.tests(context["geometry"])[0]
        width = context["geometry"].input_size
        num_pixels = int(width[0]) * int(width[1])
        results = CurveResults(
            tests=[test], names=list(context["names"]), labels=list(context["labels"]),
            curves={self.name: np.array([r["curve"] for r in records], dtype=np.float64)
                    .reshape(len(records), -1)},
            positions={self.name: test.steps.positions(num_pixels)},
            counts={self.name: test.steps.counts(num_pixels)},
            predictions=[r["prediction"] for r in records],
            clean_correct=[r["clean_correct"] for r in records])
        summary = summarize(results, context["method"], self.needs.target,
                            context.get("dataset", "ilsvrc"), context.get("prefix", "ILSVRC"),
                            self.auc)
        entry = summary["tests"][self.name]
        out = {"method": context["method"], "num_images": summary["num_images"],
               "clean_accuracy": summary["clean_accuracy"], "auc": entry["auc"], **entry}
        if self.name == "insertion" and entry["curve"] and \
                entry["curve"][0] > INSERTION_START_WARNING:
            out["warning"] = (f"the insertion curve starts at {entry['curve'][0]:.3f}: the "
                              "blurred image is already recognised, so the test measures little "
                              "on this model and data set")
        return out


@register_evaluation
class Positive(PerturbationEvaluation):
    name = "positive"
    label = "Positive perturbation"
    columns = (Column("auc", "AUC", higher_is_better=False),)


@register_evaluation
class Negative(PerturbationEvaluation):
    name = "negative"
    label = "Negative perturbation"
    columns = (Column("auc", "AUC"),)


@register_evaluation
class Insertion(PerturbationEvaluation):
    name = "insertion"
    label = "Insertion"
    columns = (Column("auc", "AUC"),)


@register_evaluation
class Deletion(PerturbationEvaluation):
    name = "deletion"
    label = "Deletion"
    columns = (Column("auc", "AUC", higher_is_better=False),)
