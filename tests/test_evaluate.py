"""agcam evaluate (agcam/evaluation/run.py): its numbers against the five scripts' to the bit, the
scripts' own outputs against those committed before the runner, resume after SIGKILL, the
report, and bad input."""
from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agcam.__main__ import entry
from tests.helpers import GOLDEN_MODEL_NAME, GOLDEN_WEIGHTS, ROOT
from tests.helpers.golden import GOLDEN_ILSVRC
from tests.helpers.imagenet_seg import FIXTURE
from tests.helpers.script_outputs import MANIFEST, METHODS, fingerprint, manifest, run_scripts

MODEL = ["--model", GOLDEN_MODEL_NAME, "--checkpoint", str(GOLDEN_WEIGHTS), "--device", "cpu",
         "--num_workers", "0", "--no_progress", "--batch_size", "4"]


def evaluate(argv) -> int:
    with contextlib.redirect_stdout(io.StringIO()):
        return entry(["evaluate", *[str(a) for a in argv]])


@pytest.fixture(scope="module")
def script_files(tmp_path_factory):
    return run_scripts(tmp_path_factory.mktemp("scripts"))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("evaluate")
    assert evaluate([*MODEL, "--method", *METHODS, "--eval", "all", "--data_root", GOLDEN_ILSVRC,
                     "--threshold", "0.5", "0.3", "--out", out / "ilsvrc"]) == 0
    assert evaluate([*MODEL, "--method", *METHODS, "--eval", "segmentation", "--dataset",
                     "imagenet_seg", "--data_root", FIXTURE, "--out", out / "seg"]) == 0
    return {name: json.loads((out / name / "results.json").read_text())
            for name in ("ilsvrc", "seg")} | {"dir": out}


def test_scripts_write_what_they_wrote_before_the_runner(script_files):
    """The five scripts' files equal those committed before the change, byte for byte (a store:
    its datasets and attributes; attributes added since are allowed), where this machine's
    float32 kernels are those that made the fixture."""
    recorded = json.loads(MANIFEST.read_text())
    if fingerprint() != recorded["fingerprint"]:
        pytest.skip("this CPU's float32 kernels differ from those that made the fixture; the "
                    "numbers are checked by the float32-bound tests instead")
    assert recorded["methods"] == METHODS
    now = manifest(script_files)
    fixture_files = ROOT / "tests" / "fixtures" / "script_outputs" / "files"
    for rel, digest in recorded["files"].items():
        assert rel in now, f"{rel} is no longer written"
        if rel.endswith(".listing"):   # every dataset and attribute of before is still there
            before = set((fixture_files / rel).read_text().splitlines())
            after = set(script_files[rel].decode().splitlines())
            assert before <= after, f"{rel}: {sorted(before - after)[:3]}"
        else:
            assert now[rel] == digest, f"{rel} changed"


def test_evaluate_gives_the_scripts_numbers_to_the_bit(script_files, runs):
    results = runs["ilsvrc"]["results"]

    def load(rel):
        return json.loads(script_files[rel])

    for method in METHODS:
        loc = load(f"localization/localization_{method}.json")
        assert results[method]["localization"]["results"] == loc["results"]
        assert results[method]["localization"]["num_images"] == loc["num_images"] == 5
        for key in ("maxboxacc", "maxboxacc_v2", "maxboxacc_delta", "maxboxacc_v2_delta",
                    "maxboxacc_threshold", "maxboxacc_v2_threshold"):
            assert results[method]["maxboxacc"][key] == loc[key], key
        abpc = load(f"label/ILSVRC_{method}_ABPC.json")
        for key in ("lerf", "morf", "abpc", "auc_lerf", "auc_morf", "num_images"):
            assert results[method]["abpc"][key] == abpc[key], key
        perturbation = load(f"predicted/ILSVRC_{method}_perturbation.json")
        for test in ("positive", "negative", "insertion", "deletion"):
            for key in ("curve", "auc", "steps", "pixels"):
                assert results[method][test][key] == perturbation["tests"][test][key], (test, key)
            assert results[method][test]["clean_accuracy"] == perturbation["clean_accuracy"]
        segmentation = load(f"segmentation/segmentation_{method}.json")
        for key in ("pixel_accuracy", "miou", "map", "iou", "num_images"):
            assert runs["seg"]["results"][method]["segmentation"][key] == segmentation[key]


def test_report_files_and_schema(runs):
    out = runs["dir"] / "ilsvrc"
    results = runs["ilsvrc"]
    assert (results["schema"], results["schema_version"]) == ("agcam-evaluate", 1)
    assert results["model"]["checkpoint_sha256"] and results["dataset"]["evaluated"] == 6
    assert [m["name"] for m in results["methods"]] == METHODS
    assert all(m["seconds"] > 0 for m in results["methods"])
    names = [e["name"] for e in results["evaluations"]]
    assert names == ["localization", "maxboxacc", "abpc", "positive", "negative", "insertion",
                     "deletion", "pointing", "completeness", "saco", "randomisation"]
    assert results["skipped_evaluations"] == {"segmentation": "the ilsvrc data set has no masks"}
    assert results["records_bytes"] > 0 and {"torch", "timm"} <= set(results["versions"])
    for name in names:
        header = (out / f"{name}.csv").read_text().splitlines()[0]
        assert header.startswith("method,label,num_images")
    page = (out / "report.html").read_text()
    assert page.count("<table>") == len(names) + 1 and "class='best'" in page
    assert page.count("data:image/png;base64,") == 7   # 6 curve figures and the example grid
    markdown = (out / "report.md").read_text()
    # the best ABPC is bold in its row
    best = max(METHODS, key=lambda m: results["results"][m]["abpc"]["abpc"])
    label = next(m["label"] for m in results["methods"] if m["name"] == best)
    row = next(line for line in markdown.splitlines() if line.startswith(f"| {label} |")
               and line.count("|") == 6)
    assert f"**{results['results'][best]['abpc']['abpc']:.4f}**" in row


def _record_lines(out: Path):
    lines = []
    for path in (out / "records").glob("*.jsonl"):
        lines += [json.loads(text) for text in path.read_text().splitlines() if text.strip()]
    return lines


def test_sigkill_and_resume_give_the_same_results_to_the_bit(tmp_path):
    argv = [*MODEL[:-2], "--batch_size", "2", "--method", "agcam", "--eval", "localization",
            "abpc", "--data_root", str(GOLDEN_ILSVRC)]
    assert evaluate([*argv, "--out", tmp_path / "whole"]) == 0
    whole = json.loads((tmp_path / "whole" / "results.json").read_text())
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "agcam", "evaluate", *argv, "--out", str(out)]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and process.poll() is None:
        if (out / "records").exists() and len(_record_lines(out)) >= 1:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done_before = {(line["method"], line["unit"]) for line in _record_lines(out)}
    assert 1 <= len(done_before) < 3, "the kill should land between the first and last unit"
    assert evaluate([*argv, "--out", out]) == 0
    lines = _record_lines(out)
    units = [(line["method"], line["unit"]) for line in lines]
    assert sorted(units) == [("agcam", 0), ("agcam", 2), ("agcam", 4)]   # none explained twice
    resumed = json.loads((out / "results.json").read_text())
    assert resumed["results"] == whole["results"]


def test_resume_with_other_settings_is_refused(tmp_path, capsys):
    argv = [*MODEL, "--method", "rollout", "--eval", "localization", "--data_root",
            GOLDEN_ILSVRC, "--out", tmp_path, "--limit", "2"]
    assert evaluate(argv) == 0
    argv[argv.index("--batch_size") + 1] = "2"
    assert evaluate(argv) == 2
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert "batch_size 4" in message and "batch_size 2" in message


@pytest.mark.parametrize("argv, message", [
    (["--eval", "nonsense"], "--eval nonsense: unknown evaluation"),
    (["--eval", "all", "localization"], "--eval all localization: all cannot be combined"),
    (["--method", "nonsense"], "--method nonsense: unknown method"),
    (["--threshold", "2"], "--threshold 2: outside [0, 1]"),
])
def test_bad_flags_exit_2_naming_them(tmp_path, capsys, argv, message):
    code = evaluate([*MODEL, "--data_root", GOLDEN_ILSVRC, "--out", tmp_path, *argv])
    assert code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("error: ") and message in last


def test_evaluation_names_for_help_match_the_registry():
    from agcam.cli.evaluate import EVALUATION_NAMES
    from agcam.evaluation.base import available_evaluations
    assert tuple(EVALUATION_NAMES) == available_evaluations()


def test_zero_shot_from_a_prompts_file(tmp_path, capsys):
    """--prompts FILE: the evaluations run the zero-shot classifier of an image-text model, one
    prompt per class; a file with the wrong count is one line naming it."""
    from agcam.datasets.synthetic import CLASSES
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(f"a {name} shape" for name in CLASSES) + "\n")
    argv = ["--model", "clip_agcam_learnt", "--device", "cpu", "--num_workers", "0",
            "--no_progress", "--dataset", "synthetic", "--data_root",
            ROOT / "samples" / "synthetic" / "ILSVRC", "--limit", "2", "--method", "agcam",
            "--eval", "localization", "--batch_size", "2"]
    assert evaluate([*argv, "--prompts", prompts, "--out", tmp_path / "run"]) == 0
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["results"]["agcam"]["localization"]["num_images"] + \
        results["results"]["agcam"]["localization"]["misclassified"] == 2
    capsys.readouterr()
    prompts.write_text("a red shape\n")
    assert evaluate([*argv, "--prompts", prompts, "--out", tmp_path / "bad"]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"--prompts {prompts}: 1 prompts for a data set of 8 classes" in line
