"""The command line as one tool: every script's and every ``agcam`` command's parser.

* Start-up: building every parser and answering ``--help`` or a usage error imports no heavy
  library (one fresh interpreter; ``agcam bench-startup`` times it).
* One vocabulary: a flag of one name has one meaning in every parser: the same destination,
  type, nargs, choices and action, and the same default and help text, except where
  :data:`MAY_DIFFER` says why.
* Help texts carry no reST markup; errors name the flag or argument the user typed.

The commands are found from ``agcam.__main__.COMMANDS``, so a new command is covered by being
added there.
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from typing import Dict, List, Tuple

import pytest

from tests.helpers import ROOT

SCRIPTS = ("localization", "save_h5", "ABPC", "perturbation", "segmentation")
HEAVY = ("torch", "timm", "transformers", "captum", "cv2", "matplotlib", "h5py", "numpy",
         "scipy", "sklearn", "PIL", "gradio", "open_clip", "tqdm")

#: flags of one meaning whose details may differ between parsers: which, and why; everything
#: else about them (type, nargs, the rest of the help) is the same. "default" covers the
#: "(default: ...)" end of the help.
MAY_DIFFER = {
    "--batch_size": ({"default"}, "images per forward pass: each command's own default size"),
    "--out": ({"default", "help", "required", "metavar"},
              "where the output goes: a folder or a file; what is written there, and whether "
              "it has a default, are each command's (the help says which)"),
    "--dataset": ({"default", "help"}, "the data sets a command takes and its default differ "
                  "(segmentation.py: imagenet_seg only; the scoring scripts: the one the store "
                  "records; finetune: those with a training split)"),
    "--method": ({"default"}, "the benchmark times every method by default, the others "
                 "explain with agcam"),
    "--model": ({"default"}, "the benchmarks time an architecture with random weights"),
    "--threads": ({"default"}, "the trainer of the learnt model runs on one thread by default"),
    "--seed": ({"default"}, "make-synthetic's default is the committed set's seed"),
    "--lr": ({"default"}, "each training recipe's own learning rate"),
    "--steps": ({"default"}, "each training recipe's own number of steps"),
    "--pair_fraction": ({"default"}, "each training recipe's own share of two-object images"),
    "--workers": ({"default"}, "the CLIP's drawing is its bottleneck: two workers by default"),
    "--weight_decay": ({"default"}, "each training recipe's own weight decay"),
    "--repeats": ({"default"}, "each benchmark's own number of repeats"),
    "--images": ({"default"}, "each benchmark's own number of images"),
    "--data_root": ({"default", "help"}, "each data set's own layout (an ILSVRC root, "
                    "gtsegs_ijcv.mat, VOCdevkit, CUB_200_2011)"),
    "--csv": ({"help"}, "what a scoring script writes is its own (the help names the file)"),
    "--file": ({"help"}, "what a scoring script writes is its own (the help names the file)"),
}
#: flags that mean different things in different commands, and why (kept short)
DIFFERENT = {
    "--threshold": "localization.py scores several thresholds at once (a list); explain draws "
                   "the boxes of one",
    "--target": "save_h5.py: which class every map explains (label or predicted); explain: "
                "one class to explain instead of the predicted one",
}
ATTRIBUTES = ("dest", "type", "nargs", "choices", "const", "required", "metavar")


def all_parsers() -> Dict[str, argparse.ArgumentParser]:
    """Every script's ``get_args_parser()`` and every ``agcam`` command's parser, by name."""
    import importlib

    from agcam.__main__ import COMMANDS, get_args_parser
    parsers = {f"{name}.py": importlib.import_module(name).get_args_parser() for name in SCRIPTS}
    top = get_args_parser()
    (sub,) = [a for a in top._actions if isinstance(a, argparse._SubParsersAction)]
    assert set(sub.choices) == set(COMMANDS)
    parsers.update({f"agcam {name}": parser for name, parser in sub.choices.items()})
    parsers["agcam"] = top
    return parsers


def _without_default(text: str) -> str:
    return re.sub(r"\(default: [^()]*(\([^()]*\)[^()]*)*\)\s*$", "(default: ...)", text or "")


def flag_table() -> Dict[str, List[Tuple[str, argparse.Action]]]:
    table: Dict[str, List[Tuple[str, argparse.Action]]] = {}
    for name, parser in all_parsers().items():
        for action in parser._actions:
            for option in action.option_strings:
                if option not in ("-h", "--help"):
                    table.setdefault(option, []).append((name, action))
    return table


def test_a_flag_of_one_name_means_the_same_everywhere():
    problems = []
    for option, uses in sorted(flag_table().items()):
        if option in DIFFERENT or len(uses) < 2:
            continue
        first_name, first = uses[0]
        may_differ = MAY_DIFFER.get(first.option_strings[0], (set(), ""))[0]
        for name, action in uses[1:]:
            for attribute in ATTRIBUTES + ("__class__", "default", "help"):
                mine, theirs = getattr(action, attribute), getattr(first, attribute)
                if attribute in may_differ:
                    continue
                if attribute == "help" and "default" in may_differ:
                    mine, theirs = _without_default(mine), _without_default(theirs)
                if mine != theirs:
                    problems.append(f"{option} {attribute}: {first_name} {theirs!r}, {name} "
                                    f"{mine!r}")
    assert not problems, "\n".join(problems)


def test_the_vocabulary_flags_come_from_the_shared_helpers():
    table = flag_table()
    # the aliases are option strings of the same flag
    for alias, canonical in (("--output", "--out"), ("--save_root", "--out"),
                             ("--methods", "--method")):
        for name, action in table[alias]:
            assert canonical in action.option_strings, (name, alias)
    # every script and image command takes the vocabulary
    for name in ("localization.py", "save_h5.py", "segmentation.py", "agcam explain"):
        options = {o for a in all_parsers()[name]._actions for o in a.option_strings}
        assert {"--method", "--out", "--device", "--precision", "--batch_size"} <= options, name
    for name in ("ABPC.py", "perturbation.py", "segmentation.py", "localization.py",
                 "save_h5.py"):
        options = {o for a in all_parsers()[name]._actions for o in a.option_strings}
        assert {"--limit", "--dataset", "--method"} <= options, name


def test_help_texts_carry_no_markup():
    markup = re.compile(r"``|:[a-z]+:`")
    for name, parser in all_parsers().items():
        texts = [parser.description or "", parser.epilog or ""] + \
            [a.help or "" for a in parser._actions if a.help is not argparse.SUPPRESS]
        for text in texts:
            assert not markup.search(text), (name, text[:200])


def test_the_light_names_match_their_sources():
    from agcam.cli import common
    from agcam.datasets import DATASETS
    from agcam.registry import paper_methods
    from models.vit import DEFAULT_MODEL
    assert common.DEFAULT_MODEL == DEFAULT_MODEL
    assert common.DATASET_NAMES == tuple(DATASETS)
    assert common.PAPER_METHODS == tuple(paper_methods())


#: builds every parser in a fresh interpreter, answers --help and a usage error of each, and
#: reports the heavy modules loaded (by whom)
PROBE = r"""
import contextlib, importlib, io, json, sys
HEAVY = %r
SCRIPTS = %r
loaded = {}
def note(who):
    for name in HEAVY:
        if name in sys.modules and name not in loaded:
            loaded[name] = who
import agcam
note("import agcam")
from agcam.__main__ import COMMANDS, entry
note("agcam.__main__")
codes = {}
def answer(who, call):
    for argv in (["--help"], ["--no_such_flag"]):
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            try:
                call(argv)
                code = 0
            except SystemExit as exc:
                code = exc.code
        codes[f"{who} {argv[0]}"] = code
        note(f"{who} {argv[0]}")
for script in SCRIPTS:
    module = importlib.import_module(script)
    answer(script, lambda argv: module.get_args_parser().parse_args(argv))
for name in COMMANDS:
    answer(f"agcam {name}", lambda argv: entry([name] + argv))
answer("agcam", lambda argv: entry(argv))
print(json.dumps({"loaded": loaded, "codes": codes}))
"""


def test_help_and_usage_errors_import_nothing_heavy():
    done = subprocess.run([sys.executable, "-c", PROBE % (HEAVY, SCRIPTS)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.splitlines()[-1])
    assert report["loaded"] == {}, report["loaded"]
    codes = report["codes"]
    assert len(codes) == 2 * (len(SCRIPTS) + len(__import__("agcam.__main__").__main__.COMMANDS)
                              + 1)
    assert all(code == (0 if key.endswith("--help") else 2) for key, code in codes.items()), codes


def test_the_face_of_the_package_loads_its_names_on_use():
    import agcam
    for name in agcam.__all__:
        assert getattr(agcam, name) is not None
    with pytest.raises(AttributeError):
        agcam.no_such_name  # noqa: B018


@pytest.mark.parametrize("argv,message", [
    (["save_h5.py", "--save_root", "{file}"], "--save_root {file}: exists and is not a directory"),
    (["save_h5.py", "--out", "{file}"], "--out {file}: exists and is not a directory"),
    (["localization.py", "--output", "{file}"], "--output {file}: exists and is not a directory"),
    (["agcam", "bench", "--methods", "nosuch"], "--methods nosuch: unknown method"),
    (["agcam", "explain", "x.png", "--method", "nosuch"], "--method nosuch: unknown method"),
    (["agcam", "convert", "{dir}", "--out", "{dir}/x.pth"], "DIR {dir}: "),
    (["segmentation.py", "--dataset", "voc"], "--dataset voc: segmentation.py runs"),
    (["ABPC.py", "--limit", "0"], "--limit 0: must be at least 1"),
    (["perturbation.py", "--limit", "0"], "--limit 0: must be at least 1"),
    (["agcam", "explain", "{file}", "--checkpoint", "{file}"],
     "--checkpoint {file}: not a checkpoint (neither the zip archive"),
])
def test_errors_name_what_the_user_typed(tmp_path, capsys, argv, message):
    import importlib

    from agcam.__main__ import entry
    from tests.helpers.scripts import run
    (tmp_path / "file").write_text("not a folder")
    values = {"file": tmp_path / "file", "dir": tmp_path}
    argv = [a.format(**values) for a in argv]
    if argv[0] == "agcam":
        code = entry(argv[1:])
    else:
        code = run(importlib.import_module(argv[0][:-3]), argv[1:])
    err = capsys.readouterr().err
    assert code == 2 and message.format(**values) in err and "Traceback" not in err, err


def test_ctrl_c_says_what_is_kept(capsys):
    from agcam.cli.common import EXIT_INTERRUPTED, run_main

    def interrupted(args):
        raise KeyboardInterrupt

    assert run_main(interrupted, argparse.Namespace(), lambda args: "3 images kept") == \
        EXIT_INTERRUPTED
    assert capsys.readouterr().err == "interrupted: 3 images kept\n"
    assert run_main(interrupted, argparse.Namespace()) == EXIT_INTERRUPTED
    assert capsys.readouterr().err == "interrupted: stopped before the end (Ctrl-C)\n"
