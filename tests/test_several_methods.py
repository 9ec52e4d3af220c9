"""``--method`` with several names or ``all``: the name resolution, and localization.py,
save_h5.py and ABPC.py running several methods in one pass give each method's single-run output."""
from __future__ import annotations

import csv
import json

import pytest

import ABPC as abpc_script
import localization as localization_script
import save_h5 as save_script
from agcam import available_methods
from agcam.cli.common import UsageError, resolve_methods, script_entry
from agcam.evaluation.box_metrics import METRICS
from agcam.registry import paper_methods
from tests.helpers import GOLDEN_ILSVRC, GOLDEN_MODEL_NAME, GOLDEN_WEIGHTS
from tests.helpers.store import assert_same_content

MODEL_ARGS = ["--model", GOLDEN_MODEL_NAME, "--checkpoint", str(GOLDEN_WEIGHTS), "--device",
              "cpu", "--no_progress"]
DATA_ARGS = ["--data_root", str(GOLDEN_ILSVRC), "--num_workers", "0", "--batch_size", "4"]
#: cheap methods for the script runs (one forward, or one forward and one small backward)
PAIR = ["rollout", "attention"]


def run(script, argv):
    return script_entry(script.get_args_parser, script.main)(list(map(str, argv)))


# -- resolving the names --------------------------------------------------------------------------
def test_all_is_every_method_the_papers_three_first():
    methods = resolve_methods(["all"])
    assert methods[:3] == paper_methods() == ["agcam", "lrp", "rollout"]
    assert sorted(methods) == sorted(available_methods())
    assert {"attention", "gradcam", "gae", "gradcam_tokens"} <= set(methods)
    assert resolve_methods("gae") == ["gae"]
    assert resolve_methods(["gae", "agcam"]) == ["gae", "agcam"]   # the order given


@pytest.mark.parametrize("names, message", [
    (["agcam", "nope"], "--method nope: unknown method; choose from "
                        f"{', '.join(available_methods())} or all"),
    (["gae", "gae"], "gae given twice"),
    (["all", "agcam"], "all cannot be combined"),
])
def test_bad_method_lists(names, message):
    with pytest.raises(UsageError, match=message.replace("(", r"\(")):
        resolve_methods(names)


@pytest.mark.parametrize("script", [localization_script, save_script, abpc_script])
def test_scripts_exit_2_listing_the_methods(tmp_path, capsys, script):
    argv = ["--method", "agcam", "gradcam", "nope"] + MODEL_ARGS
    if script is save_script:
        argv += ["--save_root", tmp_path]
    if script is abpc_script:
        argv += ["--h5_root", tmp_path]
    assert run(script, argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --method nope: unknown method")
    assert all(m in err[0] for m in available_methods())
    assert list(tmp_path.iterdir()) == []        # nothing written


# -- localization.py ------------------------------------------------------------------------------
def _rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_localization_table_equals_the_single_runs(tmp_path, capsys, golden_json):
    both, single = tmp_path / "both", tmp_path / "single"
    argv = DATA_ARGS + ["--threshold", "0.5", "0.3"] + MODEL_ARGS
    assert run(localization_script, ["--method", "agcam", *PAIR, "--output", both] + argv) == 0
    printed = capsys.readouterr().out.splitlines()
    assert run(localization_script, ["--method", PAIR[1], "--output", single] + argv) == 0
    capsys.readouterr()
    # each method's files are the single run's, byte for byte
    for suffix in ("csv", "json"):
        name = f"localization_{PAIR[1]}.{suffix}"
        assert (both / name).read_text() == (single / name).read_text()
    # the table: a row per method in the order given, the metrics per threshold as columns
    header = printed[next(i for i, line in enumerate(printed) if line.startswith("method"))]
    assert header.split() == ["method", "images"] + [f"{m}@{t}" for t in ("0.5", "0.3")
                                                     for m in METRICS]
    table = _rows(both / "localization_table.csv")
    assert [r["method"] for r in table] == ["agcam", *PAIR]
    for row in table:
        summary = json.loads((both / f"localization_{row['method']}.json").read_text())
        assert int(row["images"]) == summary["num_images"] == 5
        for key in ("0.5", "0.3"):
            for metric in METRICS:
                assert float(row[f"{metric}@{key}"]) == summary["results"][key][metric]
    agcam = table[0]
    for metric in METRICS:   # the paper's method still gives the released numbers
        assert abs(float(agcam[f"{metric}@0.5"])
                   - golden_json["localization"]["agcam@0.5"][metric]) < 1e-5
    markdown = (both / "localization_table.md").read_text().splitlines()
    assert markdown[0].startswith("| method | images | pixel_acc@0.5 |")
    assert markdown[2].startswith(f"| agcam | 5 | {float(agcam['pixel_acc@0.5']):.4f} |")
    assert len(markdown) == 2 + 3
    printed_rows = {line.split()[0]: line.split()[1:] for line in printed
                    if line.split() and line.split()[0] in ("agcam", *PAIR)}
    assert printed_rows["agcam"][1] == f"{float(agcam['pixel_acc@0.5']):.4f}"


# -- save_h5.py and ABPC.py -----------------------------------------------------------------------
def test_save_h5_writes_each_methods_single_run_file_from_one_pass(tmp_path, capsys):
    both, single = tmp_path / "both", tmp_path / "single"
    assert run(save_script, ["--method", *PAIR, "--save_root", both] + DATA_ARGS
               + MODEL_ARGS) == 0
    assert sorted(p.name for p in both.iterdir()) == sorted(f"ILSVRC_{m}.hdf5" for m in PAIR)
    for method in PAIR:
        assert run(save_script, ["--method", method, "--save_root", single] + DATA_ARGS
                   + MODEL_ARGS) == 0
        assert_same_content(both / f"ILSVRC_{method}.hdf5", single / f"ILSVRC_{method}.hdf5")
    # a missing store is written again; the complete one is left as it is
    (both / f"ILSVRC_{PAIR[0]}.hdf5").unlink()
    capsys.readouterr()
    assert run(save_script, ["--method", *PAIR, "--save_root", both] + DATA_ARGS
               + MODEL_ARGS) == 0
    out = capsys.readouterr().out
    assert f"ILSVRC_{PAIR[1]}.hdf5 is already complete" in out
    assert f"ILSVRC_{PAIR[0]}.hdf5: 6 images (6 in this run" in out
    assert_same_content(both / f"ILSVRC_{PAIR[0]}.hdf5", single / f"ILSVRC_{PAIR[0]}.hdf5")

    # ABPC.py with both: one table whose rows are the single runs' numbers
    capsys.readouterr()
    abpc_args = ["--h5_root", both, "--batch_size", "38"] + MODEL_ARGS
    assert run(abpc_script, ["--method", *PAIR] + abpc_args) == 0
    lines = capsys.readouterr().out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("method "))
    assert lines[start].split() == ["method", "images", "AUC(LeRF)", "AUC(MoRF)", "ABPC"]
    table = {line.split()[0]: line.split()[1:] for line in lines[start + 1:start + 3]}
    assert list(table) == PAIR
    for method in PAIR:
        assert run(abpc_script, ["--method", method] + abpc_args) == 0
        single_out = capsys.readouterr().out
        images, lerf, morf, abpc = table[method]
        assert images == "6"
        assert f"AUC(LeRF): {lerf}" in single_out and f"AUC(MoRF): {morf}" in single_out
        assert f"ABPC: {abpc}" in single_out


def test_abpc_checks_every_store_before_the_model(tmp_path, capsys):
    assert run(abpc_script, ["--method", "all", "--h5_root", tmp_path] + MODEL_ARGS) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no ILSVRC_agcam.hdf5 there" in err[0]
    assert run(abpc_script, ["--method", *PAIR, "--h5_file", tmp_path / "x.hdf5"]
               + MODEL_ARGS) == 2
    assert "one method only" in capsys.readouterr().err
