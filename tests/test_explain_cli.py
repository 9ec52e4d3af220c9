"""``python -m agcam explain``: PNGs per image and method, unreadable files reported, clean
exits."""
from __future__ import annotations

import subprocess
import sys

from PIL import Image

from agcam import available_methods
from agcam.__main__ import entry
from agcam.cli.explain import output_names
from agcam.figures.plotting import DPI, EXPLANATION_FIGSIZE
from tests.helpers import GOLDEN_MODEL_NAME, GOLDEN_WEIGHTS, ROOT

SAMPLES = ROOT / "samples"
FIXTURE_MODEL = ["--model", GOLDEN_MODEL_NAME, "--checkpoint", str(GOLDEN_WEIGHTS),
                 "--device", "cpu"]
PNG_SIZE = (round(EXPLANATION_FIGSIZE[0] * DPI), round(EXPLANATION_FIGSIZE[1] * DPI))


def test_two_images_and_an_unreadable_file(tmp_path, capsys):
    broken = tmp_path / "broken.jpg"
    broken.write_text("not an image")
    out = tmp_path / "out"
    images = [str(SAMPLES / "chelsea.jpg"), str(broken), str(SAMPLES / "coffee.jpg")]

    code = entry(["explain", *images, "--method", "agcam", "--out", str(out),
                  "--batch_size", "2", *FIXTURE_MODEL])
    captured = capsys.readouterr()

    assert code == 1  # some image failed; the others were still explained
    assert sorted(p.name for p in out.iterdir()) == ["chelsea_agcam.png", "coffee_agcam.png"]
    for png in out.iterdir():
        with Image.open(png) as image:
            assert image.format == "PNG" and image.size == PNG_SIZE
    assert f"error: {broken}: cannot read the image" in captured.err
    assert "Traceback" not in captured.err
    for name in ("chelsea.jpg", "coffee.jpg"):
        block = captured.out.split(f"\n{SAMPLES / name}\n", 1)[1].splitlines()[:5]
        assert [line.split(".")[0].strip() for line in block] == ["1", "2", "3", "4", "5"]


def test_all_methods_for_a_given_class(tmp_path, capsys):
    out = tmp_path / "out"
    code = entry(["explain", str(SAMPLES / "cat_and_coffee.jpg"), "--method", "all",
                  "--target", "espresso", "--out", str(out), *FIXTURE_MODEL])
    assert code == 0, capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"cat_and_coffee_{m}.png" for m in available_methods())
    assert len(available_methods()) >= 7


def test_several_methods_and_a_bad_name(tmp_path, capsys):
    out = tmp_path / "out"
    code = entry(["explain", str(SAMPLES / "chelsea.jpg"), "--method", "gae", "gradcam_tokens",
                  "--out", str(out), *FIXTURE_MODEL])
    assert code == 0, capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["chelsea_gae.png",
                                                      "chelsea_gradcam_tokens.png"]
    capsys.readouterr()
    code = entry(["explain", str(SAMPLES / "chelsea.jpg"), "--method", "agcam", "nope",
                  *FIXTURE_MODEL])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "--method nope: unknown method" in err[0] and "gradcam_tokens" in err[0]


def test_model_error_is_one_line_and_exit_code_2(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "agcam", "explain", str(SAMPLES / "chelsea.jpg"),
         "--model", "no_such_vit", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        line for line in result.stderr.strip().splitlines() if line.startswith("error: ")]
    assert "no_such_vit" in result.stderr


def test_bad_target_is_a_usage_error(capsys):
    code = entry(["explain", str(SAMPLES / "chelsea.jpg"), "--target", "no such class",
                  *FIXTURE_MODEL])
    assert code == 2
    assert "--target" in capsys.readouterr().err


def test_output_names_are_unique():
    assert output_names(["a/x.jpg", "b/x.png", "c/y.JPEG", "x.jpg"]) == ["x", "x_2", "y", "x_3"]
