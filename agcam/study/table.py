"""The learnt-model table: every registered method and the two floors through the one runner.

:func:`run_methods` runs :func:`agcam.evaluation.run.evaluate` on ``vit_agcam_learnt`` and its
held-out set (``--dataset synthetic``), one method at a time into ``DIR/runs/<method>/`` with the
same settings, and keeps each method's ``results.json``: a method already run with the same
settings is read back, not run again, so a newly registered method costs only its own run, and
an interrupted one resumes (the runner's records). :func:`merge_results` joins them into one
``results.json`` layout (the same images and prediction for every method: each run predicts
with the runner's one shared forward pass, the same batches) and :func:`doc_lines` writes the
Markdown of ``docs/learnt.md``: one table, the best value per column in bold
(:func:`agcam.report.best_methods`), and where AGCAM is not first, said in words.
"""
from __future__ import annotations

import json
import os
import shutil
from typing import Any, Callable, Dict, List, Optional, Sequence

from agcam.study.heldout import HELDOUT_ROOT, LEARNT_MODEL, subset_root

#: the evaluations of the table (segmentation needs masks the synthetic set does not have)
STUDY_EVALS = ("localization", "maxboxacc", "abpc", "positive", "negative", "insertion",
               "deletion")
#: the runner's options, as ``agcam evaluate``'s defaults
STUDY_OPTIONS = {"thresholds": [0.5], "maxboxacc_step": 0.01, "auc": "sklearn_0_1",
                 "rise_step": None}


def is_floor(method: str) -> bool:
    """Whether a registered method is a floor (``baselines.floors``: ``random``, ``centre``)."""
    from agcam.registry import method_class
    return bool(getattr(method_class(method), "floor", False))


def study_methods(methods: Optional[Sequence[str]] = None) -> List[str]:
    """``methods`` (default: every registered one) in the registry's order, floors last."""
    from agcam.registry import ordered_methods
    names = list(methods) if methods else ordered_methods()
    return [m for m in names if not is_floor(m)] + [m for m in names if is_floor(m)]


def _matches(directory: str, expected: Dict[str, Any]) -> bool:
    """Whether the run in ``directory`` (its ``run.json``) was made with ``expected``."""
    path = os.path.join(directory, "run.json")
    if not os.path.exists(path):
        return False
    with open(path, encoding="utf-8") as handle:
        recorded = json.load(handle)
    return all(recorded.get(key) == value for key, value in expected.items())


def run_methods(out: str, methods: Sequence[str], data_root: str = HELDOUT_ROOT,
                per_class: Optional[int] = None, limit: Optional[int] = None,
                device: Optional[str] = None, batch_size: int = 16,
                evals: Sequence[str] = STUDY_EVALS, fresh: bool = False,
                log: Callable[[str], None] = print) -> List[Dict[str, Any]]:
    """Each method's results on the held-out set (``per_class``: the first N images of each
    class, linked into ``DIR/heldout_<N>_per_class``; ``limit``: the first N images), run by
    :func:`agcam.evaluation.run.evaluate` or read back from ``DIR/runs/<method>/``."""
    from agcam.evaluation.run import evaluate

    root = subset_root(data_root, per_class, os.path.join(out, f"heldout_{per_class}_per_class")) \
        if per_class else data_root
    parts = []
    expected = {"model": LEARNT_MODEL, "dataset": "synthetic",
                "data_root": os.path.abspath(root), "limit": limit, "batch_size": batch_size,
                "evaluations": list(evals), "options": STUDY_OPTIONS, "checkpoint": None}
    for method in methods:
        directory = os.path.join(out, "runs", method)
        path = os.path.join(directory, "results.json")
        same = _matches(directory, dict(expected, methods=[method]))
        if os.path.exists(directory) and (fresh or not same):
            shutil.rmtree(directory)          # this folder's own run, made otherwise
        if same and not fresh and os.path.exists(path):
            log(f"{method}: read back from {path}")
            with open(path, encoding="utf-8") as handle:
                results = json.load(handle)
        else:
            log(f"{method}: running the evaluations ({', '.join(evals)})")
            results = evaluate(LEARNT_MODEL, methods=[method], evals=list(evals),
                               dataset="synthetic", data_root=root, out=directory,
                               batch_size=batch_size, limit=limit, device=device,
                               **STUDY_OPTIONS)
        parts.append(results)
    return parts


def merge_results(parts: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """One ``results.json`` layout from one-method runs of the same settings (the first part's
    header; ``methods`` and ``results`` joined)."""
    merged = dict(parts[0])
    merged["methods"] = [m for part in parts for m in part["methods"]]
    merged["results"] = {k: v for part in parts for k, v in part["results"].items()}
    merged["time"] = dict(parts[0]["time"], methods_seconds=sum(
        m["seconds"] for m in merged["methods"]))
    return merged


def pair_results(out: str, methods: Sequence[str], fresh: bool = False,
                 log: Callable[[str], None] = print) -> List[Dict[str, Any]]:
    """The two-object numbers of each class-specific method of ``methods``
    (:func:`agcam.study.behaviour.pair_rows`), kept in ``DIR/pairs/<method>.json``."""
    from agcam.registry import method_class
    from agcam.study.behaviour import pair_rows
    from agcam.study.heldout import PAIRS_ROOT, load_heldout
    from models.vit import create_model

    rows, model, pairs = [], None, None
    for method in methods:
        if not method_class(method).class_specific:
            continue
        path = os.path.join(out, "pairs", f"{method}.json")
        if os.path.exists(path) and not fresh:
            with open(path, encoding="utf-8") as handle:
                rows.append(json.load(handle))
            continue
        log(f"{method}: two-object images")
        if model is None:
            model = create_model(LEARNT_MODEL)
            pairs = load_heldout(model, PAIRS_ROOT)
        (row,) = pair_rows(model, pairs, [method])
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(row, handle)
        rows.append(row)
    return rows


#: the table's columns: (evaluation, column key, heading); percentages get one decimal
TABLE_COLUMNS = (("localization", "iou", "IoU@0.5"), ("maxboxacc", "maxboxacc", "MaxBoxAcc"),
                 ("maxboxacc", "maxboxacc_v2", "MaxBoxAccV2"), ("abpc", "abpc", "ABPC"),
                 ("positive", "auc", "positive AUC"), ("negative", "auc", "negative AUC"),
                 ("insertion", "auc", "insertion AUC"), ("deletion", "auc", "deletion AUC"))
PERCENT = {("maxboxacc", "maxboxacc"), ("maxboxacc", "maxboxacc_v2"), ("positive", "auc"),
           ("negative", "auc")}


def _columns(results: Dict[str, Any]):
    """``(evaluation, column, heading)`` of :data:`TABLE_COLUMNS` that the results hold."""
    evaluations = {e["name"]: e for e in results["evaluations"]}
    for name, key, heading in TABLE_COLUMNS:
        if name in evaluations:
            column = next(c for c in evaluations[name]["columns"] if c["key"] == key)
            yield evaluations[name], column, heading


def _value(results, method: str, evaluation: str, key: str) -> Optional[float]:
    value = results["results"].get(method, {}).get(evaluation, {}).get(key)
    return None if value is None else float(value)


def _fmt(value: Optional[float], evaluation: str = "", key: str = "") -> str:
    if value is None:
        return "n/a"
    return f"{value:.1f}" if (evaluation, key) in PERCENT else f"{value:.3f}"


def ranking(results: Dict[str, Any], evaluation: str, key: str, higher: bool) -> List[str]:
    """The methods (floors left out) from best to worst on one column."""
    scored = [(v, m["name"]) for m in results["methods"]
              if not is_floor(m["name"])
              and (v := _value(results, m["name"], evaluation, key)) is not None]
    return [name for _, name in sorted(scored, key=lambda s: -s[0] if higher else s[0])]


def not_first_lines(results: Dict[str, Any], focus: str = "agcam") -> List[str]:
    """Where ``focus`` is not first among the methods, in words (one bullet per column)."""
    from agcam.registry import method_label
    lines = []
    for evaluation, column, heading in _columns(results):
        order = ranking(results, evaluation["name"], column["key"], column["higher_is_better"])
        if focus not in order:
            continue
        rank = order.index(focus) + 1
        mine = _fmt(_value(results, focus, evaluation["name"], column["key"]),
                    evaluation["name"], column["key"])
        if rank == 1:
            lines.append(f"- {heading}: {method_label(focus)} is first ({mine}).")
            continue
        keys = (evaluation["name"], column["key"])
        ahead = ", ".join(
            f"{method_label(m)} "
            f"{_fmt(_value(results, m, evaluation['name'], column['key']), *keys)}"
            for m in order[:rank - 1][:4])
        more = f" and {rank - 5} more" if rank - 1 > 4 else ""
        lines.append(f"- **{heading}: {method_label(focus)} is not first** ({mine}, "
                     f"{rank} of {len(order)}): ahead of it {ahead}{more}.")
    return lines


def table_lines(results: Dict[str, Any]) -> List[str]:
    """One Markdown table: a row per method (floors last), the columns of
    :data:`TABLE_COLUMNS`, the best value of each column in bold
    (:func:`agcam.report.best_methods`), then the runner's warnings."""
    from agcam.report import best_methods
    columns = list(_columns(results))
    best = {}
    for evaluation, column, _ in columns:
        picks = best_methods(results, evaluation)
        best[(evaluation["name"], column["key"])] = picks[
            [c["key"] for c in evaluation["columns"]].index(column["key"])]
    header = ["method", "images (localized)"] + [
        f"{heading} {'↑' if column['higher_is_better'] else '↓'}" for _, column, heading in columns
    ] + ["s / image"]
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for method in results["methods"]:
        name = method["name"]
        cells = [method["label"], str(results["results"].get(name, {}).get(
            "localization", {}).get("num_images", "n/a"))]
        for evaluation, column, _ in columns:
            text = _fmt(_value(results, name, evaluation["name"], column["key"]),
                        evaluation["name"], column["key"])
            bold = best[(evaluation["name"], column["key"])] == name and text != "n/a"
            cells.append(f"**{text}**" if bold else text)
        cells.append(f"{method['seconds_per_image']:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    warnings = {}
    for method in results["methods"]:
        for evaluation in results["evaluations"]:
            text = results["results"].get(method["name"], {}).get(evaluation["name"], {}).get(
                "warning")
            if text:
                warnings.setdefault((evaluation["label"], text), []).append(method["name"])
    for (label, text), names in warnings.items():
        lines += ["", f"Warning ({label}, {len(names)} method(s)): {text}"]
    return lines


def pair_lines(rows: Sequence[Dict[str, Any]]) -> List[str]:
    """The two-object numbers as a Markdown table."""
    from agcam.registry import method_label
    lines = ["| method | maps peaking in their own object's box | images where both maps "
             "prefer their own object |", "|---|---:|---:|"]
    for row in rows:
        lines.append(f"| {method_label(row['method'])} | {row['hits']}/{row['maps']} | "
                     f"{row['preferred']}/{row['images']} |")
    return lines


def doc_lines(results: Dict[str, Any], pairs: Sequence[Dict[str, Any]], command: str,
              seconds: float) -> List[str]:
    """``docs/learnt.md``: the table, where AGCAM is not first, the two-object numbers and how
    they were made (every line generated: the page is rewritten by ``agcam figures``)."""

    data, model = results["dataset"], results["model"]
    floors = [m["name"] for m in results["methods"] if is_floor(m["name"])]
    methods = [m["name"] for m in results["methods"] if not is_floor(m["name"])]
    loc = results["results"].get("agcam", {}).get("localization", {})
    subset = "" if data["images"] == 160 else f" ({data['images']} of its 160 images)"
    lines = [
        "# The learnt model: every method and the floors",
        "",
        "<!-- generated by agcam/study/table.py (agcam figures); edit the code, not this page -->",
        "",
        f"Every registered method ({len(methods)}) and the {len(floors)} floors "
        f"({', '.join(f'`{f}`' for f in floors)}: maps that ignore the model, "
        "`baselines/floors.py`) on "
        f"`{model['name']}` and its synthetic held-out set{subset}: {data['evaluated']} images, "
        f"{loc.get('num_images', 'n/a')} of them classified correctly "
        "([datasets.md](datasets.md#the-synthetic-set-and-the-learnt-model)). Every number comes "
        "from one run of `agcam evaluate` per method (`agcam.evaluation.run.evaluate`, the same "
        "images, batches and one shared prediction for every method), with the evaluations' "
        "conventions below. Best value of each column in bold, floors included; arrows: which "
        "way is better.",
        "",
    ]
    lines += table_lines(results)
    lines += ["", "## Where AGCAM is not first", "",
              "Among the methods (floors left out), column by column:", ""]
    lines += not_first_lines(results)
    lines += ["", "A synthetic task of colour and texture is not ImageNet: the table says which "
              "methods find the object on this model, not how they rank on natural images.", ""]
    if pairs:
        lines += ["## Two-object images", "",
                  f"`samples/synthetic/pairs`: {pairs[0]['images']} images with two objects of "
                  "different classes. Each class-specific method's map of each of the two "
                  "classes; counted are the maps whose maximum lies in that class's own box (a "
                  "map that ignores the class can hit at most one of an image's two), and the "
                  "images where both maps have a higher mean inside their own object's box than "
                  "inside the other's (such a map never can). Class-agnostic methods and the "
                  "floors are left out.", ""]
        lines += pair_lines(pairs)
        lines.append("")
    lines += ["## The evaluations", ""]
    for evaluation in results["evaluations"]:
        lines.append(f"- {evaluation['label']}: {evaluation['convention']}.")
    versions = ", ".join(f"{k} {v}" for k, v in results["versions"].items())
    lines += ["", "## How it was made", "",
              f"`{command}`, {results['created'][:10]}, on {results['device']} (this project's "
              f"test machine, shared with other jobs: the times are upper bounds); "
              f"{seconds:.0f} s of method time in all. {versions}. The per-method runs are kept "
              "in the run folder (`--runs`), so a newly registered method costs only its own "
              "run.", ""]
    return lines


def write_doc(path: str, lines: Sequence[str]) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines).rstrip() + "\n")
    return path
