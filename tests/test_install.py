"""What ``pip install .`` promises: pyproject.toml declares what requirements.txt pins, and the
declared dependencies are enough to run the package.

* Every line of requirements.txt is a dependency of pyproject.toml or of one of its extras (any
  extra: ``hf``, ``clip``, ``app``, ``test``, ...), its pinned version inside the declared range;
  every declared dependency is in requirements.txt.
* (slow) The package installed by pip (``--no-deps``) into a fresh virtual environment that sees
  only the declared runtime dependencies and what they declare in turn (the installed
  distributions of that closure, linked in; nothing else of the test environment): every module
  of ``agcam``, ``baselines`` and ``models`` imports, and ``agcam explain`` and ``agcam evaluate``
  run from another folder. A runtime dependency missing from pyproject.toml (captum was) fails it.
"""
from __future__ import annotations

import importlib.metadata as metadata
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Set

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.helpers import ROOT

tomllib = pytest.importorskip("tomllib")      # Python 3.11+
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def requirement_lines() -> List[Requirement]:
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    return [Requirement(line.split("#")[0].strip()) for line in lines
            if line.split("#")[0].strip()]


def declared() -> Dict[str, List[Requirement]]:
    """``{"dependencies": [...], "<extra>": [...]}`` of pyproject.toml."""
    groups = {"dependencies": [Requirement(r) for r in PYPROJECT["dependencies"]]}
    for extra, requirements in PYPROJECT.get("optional-dependencies", {}).items():
        groups[extra] = [Requirement(r) for r in requirements]
    return groups


def test_every_requirement_is_declared_by_pyproject():
    by_name: Dict[str, List[tuple]] = {}
    for group, requirements in declared().items():
        for requirement in requirements:
            by_name.setdefault(canonicalize_name(requirement.name), []).append(
                (group, requirement))
    problems = []
    pinned = {}
    for line in requirement_lines():
        name = canonicalize_name(line.name)
        pinned[name] = line
        if name not in by_name:
            problems.append(f"{line}: in requirements.txt, in no dependency or extra of "
                            "pyproject.toml")
            continue
        exact = [s.version for s in line.specifier if s.operator == "=="]
        for group, requirement in by_name[name]:
            if exact and not requirement.specifier.contains(exact[0], prereleases=True):
                problems.append(f"{line}: outside pyproject.toml's {group} range {requirement}")
    for name, uses in by_name.items():
        if name not in pinned:
            problems.append(f"{uses[0][1]} ({uses[0][0]}): in pyproject.toml, not in "
                            "requirements.txt")
    assert not problems, "\n".join(problems)
    groups = declared()
    names = {g: {canonicalize_name(r.name) for r in rs} for g, rs in groups.items()}
    assert "captum" in names["dependencies"]           # baselines import it on a method lookup
    assert names["hf"] == {"transformers"} and "pytest" in names["test"]


def _closure(requirements: List[Requirement]) -> Set[str]:
    """The installed distributions ``requirements`` need, and those they need in turn (markers
    evaluated here, no extras): what ``pip install`` of the package would bring."""
    seen: Set[str] = set()
    todo = list(requirements)
    while todo:
        requirement = todo.pop()
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue
        name = canonicalize_name(requirement.name)
        if name in seen:
            continue
        dist = metadata.distribution(name)
        seen.add(name)
        todo += [Requirement(r) for r in (dist.requires or [])]
    return seen


def _link_site(names: Set[str], site: Path) -> None:
    """Link each distribution's top-level files and folders (and its .dist-info) into
    ``site``."""
    site.mkdir(parents=True)
    for name in sorted(names):
        dist = metadata.distribution(name)
        for path in dist.files or []:
            top = path.parts[0]
            if top in ("..", "__pycache__") or top.endswith(".pth"):
                continue
            source = Path(dist.locate_file(top))
            target = site / top
            if source.exists() and not target.exists() and not target.is_symlink():
                target.symlink_to(source)


IMPORT_EVERY_MODULE = r"""
import importlib, pkgutil, sys
import agcam, baselines, models
assert not agcam.__file__.startswith(sys.argv[1]), agcam.__file__   # the installed copy
failed = []
for package in (agcam, baselines, models):
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        try:
            importlib.import_module(info.name)
        except ImportError as exc:
            failed.append(f"{info.name}: {exc}")
print("\n".join(failed))
sys.exit(1 if failed else 0)
"""


@pytest.mark.slow
def test_pip_install_then_agcam_runs_from_another_folder(tmp_path):
    source = tmp_path / "source"         # a copy: the build leaves nothing in the repository
    for name in ("agcam", "baselines", "models"):
        shutil.copytree(ROOT / name, source / name,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)
    python = venv / "bin" / "python"
    # the wheel built here (setuptools is in the test environment), installed there
    def pip(*argv):
        done = subprocess.run([sys.executable, "-m", "pip", *argv], capture_output=True,
                              text=True, timeout=300, cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]

    pip("wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "wheel"),
        str(source))
    (wheel,) = (tmp_path / "wheel").glob("agcam-*.whl")
    pip("--python", str(python), "install", "-q", "--no-deps", str(wheel))
    # the declared runtime dependencies and their own, nothing else (no transformers, pytest...)
    runtime = _closure(declared()["dependencies"])
    assert "transformers" not in runtime and "pytest" not in runtime
    _link_site(runtime, tmp_path / "deps")
    (site,) = (venv / "lib").glob("python3*/site-packages")
    (site / "declared_dependencies.pth").write_text(str(tmp_path / "deps") + "\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")

    def run(*argv):
        done = subprocess.run(list(argv), cwd=elsewhere, env=env, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, (argv, done.stdout[-2000:], done.stderr[-3000:])
        return done.stdout

    # every module imported, in a process of its own beside explain's (two cores)
    walk = subprocess.Popen([str(python), "-c", IMPORT_EVERY_MODULE, str(ROOT)], cwd=elsewhere,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    image = ROOT / "samples" / "synthetic" / "pairs" / "Data" / "CLS-LOC" / "val" / \
        "synth_pair_001.JPEG"
    agcam = str(venv / "bin" / "agcam")
    printed = run(agcam, "explain", str(image), "--model", "vit_agcam_learnt", "--method",
                  "agcam", "ig", "--out", "pngs", "--device", "cpu")
    assert "wrote 2 PNG file(s)" in printed
    assert sorted(p.name for p in (elsewhere / "pngs").iterdir()) == \
        ["synth_pair_001_agcam.png", "synth_pair_001_ig.png"]
    out, err = walk.communicate(timeout=300)
    assert walk.returncode == 0, (out[-3000:], err[-3000:])
    # the README's ten lines, from this other folder
    readme = (ROOT / "README.md").read_text()
    snippet = readme.split("## Ten lines of Python", 1)[1].split("```python", 1)[1].split("```")[0]
    run(str(python), "-c", snippet + "\nassert tuple(heatmaps.shape) == (1, 112, 112)\n")
    if re.search(r"--eval\b", run(agcam, "evaluate", "--help")):
        run(agcam, "evaluate", "--model", "vit_agcam_learnt", "--dataset", "synthetic",
            "--data_root", str(ROOT / "samples" / "synthetic" / "ILSVRC"), "--method", "agcam",
            "--eval", "localization", "--limit", "1", "--out", "report", "--device", "cpu",
            "--no_progress")
        assert (elsewhere / "report" / "results.json").is_file()
