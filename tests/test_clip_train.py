"""``agcam train-clip``: the training of ``clip_agcam_learnt`` (a few steps of a tiny batch; the
committed weights are checked in tests/test_clip_learnt.py).

The per-attribute contrastive term is checked on embeddings whose answer is known, its targets
on a two-object image, and the command on three steps: it writes weights that load offline and
a log, keeps the text tower at its random initialisation while ``--text_lock`` lasts, and is
seeded (the same arguments train the same weights).
"""
from __future__ import annotations

import argparse
import json
import math

import torch

from agcam.cli import train_clip
from agcam.datasets.captions import sample_captioned
from agcam.train.clip import KINDS, attribute_loss, attribute_targets
from models.clip import learnt_clip, load_learnt_clip


class OneHotText:
    """A text tower whose prompt ``i`` of a kind is the ``i``-th unit vector."""

    def forward_tokens(self, tokens):
        return torch.eye(len(tokens), 4)


def test_attribute_loss_on_known_embeddings():
    # two images; per kind, image r's embedding is the unit vector of its target word
    targets = [torch.tensor([[1.0, 0, 0, 0], [0, 1, 0, 0]]), torch.tensor([[1.0, 0], [0, 1]]),
               torch.tensor([[0, 0, 1.0, 0], [0, 0, 0, 1]])]
    prompts = [torch.zeros(4, 3), torch.zeros(2, 3), torch.zeros(4, 3)]
    image = torch.eye(2, 4)                              # images 0 and 1: unit vectors 0 and 1
    scale = torch.tensor(1.0)
    loss = attribute_loss(image, OneHotText(), scale, prompts, targets)
    # colour and texture: the right word scores 1, the others 0; shape: the right word scores 0
    # like two others, and the image's own unit vector (a wrong word) scores 1
    colour = math.log(1 + 3 * math.exp(-1))
    texture = math.log(1 + math.exp(-1))
    shape = -math.log(1 / (math.e + 3))
    assert abs(float(loss) - (colour + texture + shape) / 3) < 1e-6


def test_attribute_targets_share_an_image_between_its_objects():
    item = sample_captioned(5, 0, pair=True, specs=[("red", "plain", "square"),
                                                    ("blue", "striped", "circle")])
    colour, texture, shape = attribute_targets([item])
    assert [name for name, _, _ in KINDS] == ["colour", "texture", "shape"]
    assert colour.tolist() == [[0.5, 0.0, 0.0, 0.5]]     # red, yellow, green, blue
    assert texture.tolist() == [[0.5, 0.5]]
    assert shape[0].sum() == 1 and shape[0].max() == 0.5


def test_train_clip_writes_loadable_weights_locks_the_text_tower_and_is_seeded(tmp_path):
    out = tmp_path / "c.safetensors"
    parser = train_clip.add_arguments(argparse.ArgumentParser())
    argv = ["--steps", "3", "--batch_size", "6", "--workers", "0", "--fresh_images", "4",
            "--log_every", "1", "--text_lock", "3", "--pair_fraction", "0.5",
            "--large_fraction", "0.5", "--out", str(out), "--threads",
            str(torch.get_num_threads())]
    assert train_clip.main(parser.parse_args(argv)) == 0
    log = json.loads((tmp_path / "c.json").read_text())
    assert log["images_seen"] == 18 and log["heldout_images"] == 160
    assert set(log["fresh_zero_shot_accuracy"]) == {"colour", "texture", "shape"}
    assert [entry["step"] for entry in log["log"]] == [1, 2, 3]
    assert all(entry["attributes"] > 0 for entry in log["log"])
    trained = load_learnt_clip(str(out))
    torch.manual_seed(0)
    initial = learnt_clip()
    # the text tower kept its random weights (stored in float16); the image tower moved
    for name, value in initial.text.state_dict().items():
        assert torch.equal(trained.text.state_dict()[name], value.half().float()), name
    assert not torch.equal(trained.visual.pos_embed, initial.visual.pos_embed.half().float())
    first = {k: v.clone() for k, v in trained.state_dict().items()}
    assert train_clip.main(parser.parse_args(argv)) == 0
    again = load_learnt_clip(str(out)).state_dict()
    assert all(torch.equal(first[k], again[k]) for k in first)
    # the text tower trains once the lock is over
    assert train_clip.main(parser.parse_args([*argv[:-4], "--text_lock", "1", "--out",
                                              str(out), "--threads", "1"])) == 0
    moved = load_learnt_clip(str(out))
    assert not torch.equal(moved.text.token_embedding.weight,
                           initial.text.token_embedding.weight.half().float())
