"""The project installs as a package: ``pip install -e .`` / a wheel holds ``agcam``,
``baselines`` and ``models`` and the ``agcam`` console script; ``python -m agcam`` lists every
subcommand."""
from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile

from agcam.__main__ import COMMANDS, get_args_parser
from tests.helpers import ROOT


def build_wheel(out) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(out), str(ROOT)], check=True, cwd=out, capture_output=True,
                   timeout=300)


def test_a_wheel_holds_the_three_packages_and_the_console_script(tmp_path):
    # setuptools builds in the source tree: what it leaves there (build/, *.egg-info) is removed
    leftovers = [ROOT / "build", ROOT / "agcam.egg-info"]
    existed = [path.exists() for path in leftovers]
    try:
        build_wheel(tmp_path)
    finally:
        for path, was_there in zip(leftovers, existed):
            if not was_there:
                shutil.rmtree(path, ignore_errors=True)
    (wheel,) = tmp_path.glob("agcam-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        entry_points = next(archive.read(n).decode() for n in names
                            if n.endswith("entry_points.txt"))
    for package in ("agcam", "baselines", "models", "agcam/store", "agcam/evaluation"):
        assert f"{package}/__init__.py" in names, package
    assert "models/weights/vit_agcam_learnt.safetensors" in names   # the learnt model's weights
    assert not any(n.startswith("tests/") for n in names)
    assert "agcam = agcam.__main__:entry" in entry_points


def test_python_m_agcam_lists_every_subcommand():
    assert {"explain", "bench", "bench-abpc", "finetune"} <= set(COMMANDS)
    text = get_args_parser().format_help()
    assert all(name in text for name in COMMANDS)
    done = subprocess.run([sys.executable, "-m", "agcam", "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "explain" in done.stdout
