"""``agcam explain IMAGE --model clip_agcam_learnt --text ...``: one PNG per prompt and method,
titled with the prompt and its probability; bad input is one line and exit code 2."""
from __future__ import annotations

import os

import pytest

from agcam.__main__ import entry
from agcam.cli.explain_text import prompt_title

IMAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "samples",
                     "synthetic", "pairs", "Data", "CLS-LOC", "val", "synth_pair_001.JPEG")


def test_one_png_per_prompt_and_method(tmp_path, capsys):
    code = entry(["explain", IMAGE, "--model", "clip_agcam_learnt", "--text", "red", "a striped "
                  "shape", "--method", "grad_eclip", "--out", str(tmp_path)])
    assert code == 0
    assert sorted(os.listdir(tmp_path)) == [f"synth_pair_001_grad_eclip_p{i}.png" for i in (0, 1)]
    out = capsys.readouterr().out
    assert '"red": ' in out and '"a striped shape": ' in out and "wrote 2 PNG" in out


@pytest.mark.parametrize("argv, message", [
    (["--model", "vit_agcam_learnt", "--text", "red"], "--text needs an image-text model"),
    (["--model", "clip_agcam_learnt", "--text", "red", "--target", "1"], "--target"),
    (["--model", "clip_agcam_learnt", "--checkpoint", "/nonexistent.safetensors", "--text",
      "red"], "no such weights file"),
])
def test_bad_input_is_one_line(argv, message, tmp_path, capsys):
    code = entry(["explain", IMAGE, "--out", str(tmp_path), *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0]


def test_prompt_title():
    assert prompt_title("a red circle", 0.9312) == '"a red circle": 93.1%'


def test_bench_clip_times_a_prompt_against_the_forward(capsys):
    code = entry(["bench", "--clip", "clip_agcam_learnt", "--clip_text", "red", "blue",
                  "--batch_sizes", "1", "--repeats", "1", "--method", "grad_eclip",
                  "--abpc_images", "0", "--device", "cpu"])
    out = capsys.readouterr().out
    assert code == 0 and "clip_agcam_learnt (zero-shot classifier of the prompts)" in out
    rows = [line.split() for line in out.splitlines() if line.split()[:2] in
            (["1", "forward"], ["1", "grad_eclip"])]
    assert len(rows) == 2 and float(rows[0][4]) == 1.0 and float(rows[1][4]) > 0
    assert entry(["bench", "--clip", "nope", "--batch_sizes", "1"]) == 2
