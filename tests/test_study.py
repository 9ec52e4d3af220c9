"""The learnt-model study and the committed figures, generated from the registries (fast: no
model run but where said).

The committed figures (docs/figures/figures.json, written by ``agcam figures``) and the
learnt-model page (docs/learnt.md) must show every registered method: registering a method
without regenerating them fails here. The table's layout (best per column, floors last, where
AGCAM is not first) is checked on hand-made results whose answer is known.
"""
from __future__ import annotations

import json
import os
import re

from agcam.registry import available_methods, method_label
from agcam.study.figures import FIGURES_DIR, load_figures, read_sidecar
from agcam.study.table import (
    doc_lines,
    is_floor,
    merge_results,
    not_first_lines,
    run_methods,
    study_methods,
    table_lines,
)
from tests.helpers import ROOT

DOC = ROOT / "docs" / "learnt.md"


def test_every_registered_method_is_in_the_committed_figures():
    sidecar = read_sidecar(FIGURES_DIR)
    registered = set(available_methods())
    figures = load_figures()
    assert set(figures) <= set(sidecar["figures"]), "run agcam figures"
    for name, spec in figures.items():
        entry = sidecar["figures"][name]
        assert os.path.exists(os.path.join(FIGURES_DIR, name)), name
        assert os.path.getsize(os.path.join(FIGURES_DIR, name)) == entry["bytes"], name
        if spec.every_method:
            missing = sorted(registered - set(entry["methods"]))
            assert not missing, f"{name} lacks {', '.join(missing)}: run agcam figures"
            assert set(entry["methods"]) <= registered, name
    # the README's first figure is one of them, and one that shows every method
    readme = (ROOT / "README.md").read_text()
    shown = re.findall(r"!\[[^\]]*\]\(docs/figures/([^)]+)\)", readme)
    assert shown and shown[0] in figures and figures[shown[0]].every_method, shown


def table_methods(text: str):
    """The method labels of the first Markdown table of ``text``."""
    rows = []
    for line in text.split("\n## ")[0].splitlines():
        if line.startswith("| ") and not line.startswith("| method"):
            rows.append(line.split("|")[1].strip())
    return rows


def test_every_registered_method_is_in_the_learnt_table():
    text = DOC.read_text()
    labels = table_methods(text)
    missing = [m for m in available_methods() if method_label(m) not in labels]
    assert not missing, f"docs/learnt.md lacks {', '.join(missing)}: run agcam figures"
    assert len(labels) == len(set(labels))
    # the floors come last, and the page says where AGCAM is not first
    floors = [method_label(m) for m in available_methods() if is_floor(m)]
    assert floors and labels[-len(floors):] == floors
    assert "## Where AGCAM is not first" in text


def fake_results(values, columns=(("localization", "iou", True), ("positive", "auc", False))):
    """A results.json layout with ``values[method] = (iou, positive auc)``."""
    evaluations = [{"name": name, "label": name.title(), "convention": "made up",
                    "columns": [{"key": key, "label": key, "higher_is_better": higher}]}
                   for name, key, higher in columns]
    return {
        "schema": "agcam-evaluate", "created": "2026-12-05T00:00:00",
        "model": {"name": "vit_agcam_learnt"},
        "dataset": {"name": "synthetic", "images": 160, "evaluated": 160},
        "methods": [{"name": m, "label": method_label(m), "seconds": 1.0,
                     "seconds_per_image": 0.5} for m in values],
        "evaluations": evaluations,
        "results": {m: {name: {key: v, "num_images": 150}
                        for (name, key, _), v in zip(columns, vals)}
                    for m, vals in values.items()},
        "time": {"predict_seconds": 0.1, "methods_seconds": float(len(values))},
        "versions": {"torch": "x"}, "device": "cpu",
    }


def test_the_table_marks_the_best_and_says_where_agcam_is_not_first():
    results = fake_results({"agcam": (0.59, 20.0), "legrad": (0.70, 25.0),
                            "rollout": (0.40, 30.0), "random": (0.80, 90.0)})
    lines = table_lines(results)
    rows = {line.split("|")[1].strip(): line for line in lines[2:] if line.startswith("| ")}
    # best per column over every row, floors included: the random map's IoU here
    assert "**0.800**" in rows[method_label("random")]
    assert "**20.0**" in rows[method_label("agcam")]        # lower is better
    assert "**" not in rows[method_label("rollout")]
    # among the methods (the floor left out): LeGrad ahead on IoU, AGCAM first on the other
    assert not_first_lines(results) == [
        "- **IoU@0.5: AGCAM is not first** (0.590, 2 of 3): ahead of it LeGrad 0.700.",
        "- positive AUC: AGCAM is first (20.0)."]
    page = "\n".join(doc_lines(results, [], "agcam figures", 4.0))
    assert table_methods(page.split("-->", 1)[1]) == [method_label(m) for m in results["results"]]


def test_floors_come_last_and_are_flagged():
    order = study_methods()
    floors = [m for m in order if is_floor(m)]
    assert sorted(floors) == ["centre", "random"] and order[-2:] == floors
    assert not any(is_floor(m) for m in ("agcam", "rollout", "lrp"))
    assert study_methods(["random", "agcam"]) == ["agcam", "random"]


def test_merged_results_keep_every_method():
    a = fake_results({"agcam": (0.5, 20.0)})
    b = fake_results({"legrad": (0.7, 25.0)})
    merged = merge_results([a, b])
    assert [m["name"] for m in merged["methods"]] == ["agcam", "legrad"]
    assert set(merged["results"]) == {"agcam", "legrad"}
    assert merged["time"]["methods_seconds"] == 2.0


def test_a_method_run_with_the_same_settings_is_read_back(tmp_path, monkeypatch):
    from agcam.evaluation import run as runner
    from agcam.study import table

    directory = tmp_path / "runs" / "agcam"
    directory.mkdir(parents=True)
    recorded = {"model": "vit_agcam_learnt", "dataset": "synthetic",
                "data_root": os.path.abspath(table.HELDOUT_ROOT), "limit": None,
                "batch_size": 16, "evaluations": list(table.STUDY_EVALS),
                "options": table.STUDY_OPTIONS, "checkpoint": None, "methods": ["agcam"]}
    (directory / "run.json").write_text(json.dumps(recorded))
    (directory / "results.json").write_text(json.dumps(fake_results({"agcam": (0.5, 20.0)})))
    ran = []
    monkeypatch.setattr(runner, "evaluate", lambda *a, **k: ran.append(k) or
                        fake_results({"agcam": (0.1, 1.0)}))
    (part,) = run_methods(str(tmp_path), ["agcam"], log=lambda line: None)
    assert not ran and part["results"]["agcam"]["localization"]["iou"] == 0.5
    # other settings: the folder's old run is dropped and the method run again
    (part,) = run_methods(str(tmp_path), ["agcam"], batch_size=8, log=lambda line: None)
    assert len(ran) == 1 and ran[0]["batch_size"] == 8 and not (directory / "run.json").exists()


def test_figure_names_come_from_the_model():
    from agcam.datasets.synthetic import CLASSES
    from agcam.study.figures import FigureContext
    context = FigureContext(methods=["agcam"])
    assert context.class_names([1, 2]) == [CLASSES[1], CLASSES[2]]


def test_the_commands_refuse_bad_input_in_one_line(tmp_path, capsys):
    from agcam.__main__ import entry
    for argv, message in ((["figures", "--figure", "nope.png", "--out", str(tmp_path)],
                           "--figure nope.png: unknown; choose from learnt_"),
                          (["study", "--method", "nope"], "--method nope: unknown method"),
                          (["figures", "--limit_per_class", "0", "--out", str(tmp_path)],
                           "--limit_per_class 0: must be at least 1")):
        assert entry(argv) == 2, argv
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], (argv, lines)


def test_the_floors_ignore_the_model_and_are_seeded():
    import torch

    from agcam.registry import get_explainer
    from models.vit import create_model
    model = create_model("vit_agcam_learnt")
    images = torch.randn(3, 3, 112, 112, generator=torch.Generator().manual_seed(0))
    images[2] = images[0]
    predictions, noise = get_explainer("random", model).explain(images)
    with torch.no_grad():
        assert torch.equal(predictions, model(images).argmax(1))
    assert noise.shape == (3, 7, 7) and not torch.equal(noise[0], noise[1])
    assert torch.equal(noise[0], noise[2])                 # a map of the image's bytes
    _, again = get_explainer("random", model).explain(images[1:2])
    assert torch.equal(again[0], noise[1])                 # alone or in a batch
    _, other = get_explainer("random", model, seed=1).explain(images[:1])
    assert not torch.equal(other[0], noise[0])
    _, centre = get_explainer("centre", model).explain(images)
    assert torch.equal(centre[0], centre[1]) and int(centre[0].argmax()) == 24   # (3, 3)
    assert torch.allclose(centre[0], centre[0].flip(0)) and torch.allclose(centre[0],
                                                                            centre[0].T)
