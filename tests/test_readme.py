"""Every command and the Python snippet README.md shows, run as written (the paper's ILSVRC
commands on the learnt model and its held-out set, which is what this machine has offline)."""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys

import pytest

from tests.helpers import ROOT

README = (ROOT / "README.md").read_text()
#: how the paper's commands run offline: the learnt model on its held-out set
LEARNT = ["--model", "vit_agcam_learnt", "--dataset", "synthetic", "--limit", "4",
          "--num_workers", "0", "--no_progress"]


def blocks(language):
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def commands():
    """The README's shell commands (continuation lines joined), install and test excluded."""
    found = []
    for block in blocks("bash"):
        for command in block.replace("\\\n", " ").splitlines():
            command = command.strip()
            if command and "pip install" not in command and "pytest" not in command:
                found.append(shlex.split(command, comments=True))
    return found


def offline(argv, tmp_path):
    """The command with its data and outputs moved to the learnt model and ``tmp_path``."""
    if argv[0] == "agcam":   # the console script of pip install: the same as python -m agcam
        argv = ["python", "-m", *argv]
    argv = [sys.executable if a == "python" else a for a in argv]
    script = argv[1]
    replace = {"./ILSVRC": str(ROOT / "samples" / "synthetic" / "ILSVRC"),
               "./saveroot": str(tmp_path / "saveroot"), "explanations/": str(tmp_path / "out")}
    argv = [replace.get(a, a) for a in argv]
    if script in ("localization.py", "save_h5.py"):
        argv += LEARNT + (["--output", str(tmp_path / "loc")] if script == "localization.py"
                          else [])
    elif script == "ABPC.py":
        argv += ["--model", "vit_agcam_learnt", "--dataset", "synthetic", "--no_progress"]
    elif argv[1:4] == ["-m", "agcam", "evaluate"]:   # as written, on four images, two methods
        argv += ["--method", "agcam", "rollout", "--eval", "localization", "abpc", "--limit", "4",
                 "--num_workers", "0", "--no_progress", "--out", str(tmp_path / "report")]
    return argv


def test_the_readme_is_short_and_links_existing_docs():
    assert len(README.splitlines()) <= 250
    for link in re.findall(r"\]\((docs/[^)#]+)", README):
        assert (ROOT / link).is_file(), link
    assert (ROOT / "docs" / "figures" / "learnt_methods.png").is_file()


def test_the_python_snippet_runs(tmp_path):
    (snippet,) = blocks("python")
    assert len(snippet.strip().splitlines()) <= 12
    namespace = {}
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        exec(compile(snippet, "README.md", "exec"), namespace)
    finally:
        os.chdir(cwd)
    assert tuple(namespace["maps"].shape) == (1, 7, 7)
    assert tuple(namespace["heatmaps"].shape) == (1, 112, 112)
    assert not namespace["maps"].equal(namespace["other"])


@pytest.mark.slow
def test_every_command_runs(tmp_path):
    found = commands()
    shown = [" ".join(argv[:3]) for argv in found]
    assert shown == ["python -m agcam", "python -m agcam", "python localization.py --method",
                     "python save_h5.py --method", "python ABPC.py --method",
                     "agcam evaluate --model"], shown
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
    # agcam app serves until stopped: its page is driven in tests/test_app_browser.py
    found = [argv for argv in found if argv[:4] != ["python", "-m", "agcam", "app"]]
    for argv in found:
        argv = offline(argv, tmp_path)
        done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, (argv, done.stderr[-2000:])
        if argv[1:4] == ["-m", "agcam", "explain"]:
            assert len(list((tmp_path / "out").glob("*.png"))) >= 13
        elif argv[1:4] == ["-m", "agcam", "evaluate"]:
            assert (tmp_path / "report" / "report.html").is_file()
        elif argv[1] == "ABPC.py":
            assert re.search(r"^agcam\s+4\s", done.stdout, flags=re.M), done.stdout
