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


SEG_FIXTURE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "imagenet_seg")


def test_segmentation_runs_on_class_name_prompts(tmp_path, capsys):
    """``segmentation.py --prompts classnames``: Chefer's segmentation test on the zero-shot
    classifier of ImageNet's class names in CLIP's "a photo of a {}." (a tiny random HF CLIP from
    a folder). Its numbers are those of the same test run in Python on a classifier made from
    the prompts written out here, and a bad template is one line."""
    import json

    import segmentation
    from agcam import evaluate, zero_shot
    from models.clip import create_clip
    from tests.fixtures.clip.make_tiny_clip import tiny_hf_clip

    folder = str(tmp_path / "clip")
    tiny_hf_clip(folder)
    argv = ["--data_root", SEG_FIXTURE, "--method", "agcam", "rollout", "--checkpoint", folder,
            "--limit", "4", "--no_progress"]
    args = segmentation.get_args_parser().parse_args(
        [*argv, "--prompts", "classnames", "--out", str(tmp_path / "seg")])
    assert segmentation.main(args) == 0

    from timm.data import ImageNetInfo
    info = ImageNetInfo()
    names = [info.index_to_description(i).split(",")[0] for i in range(1000)]
    names[134], names[517] = "crane bird", "construction crane"   # both "crane" in WordNet
    names[639] = "maillot, tank suit"                               # the second "maillot"
    classifier = zero_shot(create_clip(None, checkpoint=folder),
                           [f"a photo of a {name}." for name in names])
    results = evaluate(classifier, methods=["agcam", "rollout"], evals=["segmentation"],
                       dataset="imagenet_seg", data_root=SEG_FIXTURE, limit=4,
                       out=str(tmp_path / "api"))
    for method in ("agcam", "rollout"):
        script = json.loads((tmp_path / "seg" / f"segmentation_{method}.json").read_text())
        api = results["results"][method]["segmentation"]
        assert script["num_images"] == 4
        for key in ("pixel_accuracy", "miou", "map"):
            assert api[key] == script[key], (method, key)

    capsys.readouterr()
    from agcam.cli.common import script_entry
    code = script_entry(segmentation.get_args_parser, segmentation.main)(
        [*argv, "--prompts", "classnames:a {} {}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "must hold one {}" in err[0]


def test_class_names_of_every_data_set(tmp_path):
    """The names ``--prompts classnames`` reads: one per class, in class order, all different."""
    from agcam.datasets import DATASETS, class_names
    from tests.helpers.datasets import make_cub
    imagenet = class_names("ilsvrc")
    assert imagenet[:2] == ("tench", "goldfish") and len(set(imagenet)) == 1000
    assert (imagenet[134], imagenet[517]) == ("crane bird", "construction crane")
    assert class_names("imagenet_seg") == imagenet
    voc = class_names("voc")
    assert len(voc) == DATASETS["voc"].num_classes and voc[10] == "dining table"
    assert class_names("synthetic")[:2] == ("red plain", "red striped")
    cub = class_names("cub", str(make_cub(tmp_path)), "test")
    assert len(cub) == 200 and cub[0] == "Bird 001"
