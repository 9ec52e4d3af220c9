"""Train ``clip_agcam_learnt``: a small CLIP learnt contrastively on captioned synthetic shapes.

    agcam train-clip                       # writes models/weights/clip_agcam_learnt.*
    agcam train-clip --out /tmp/c.safetensors --steps 100     # a shorter run

Batch ``b`` is images ``b * batch_size ...`` of the stream ``--seed`` of
:func:`agcam.datasets.captions.sample_captioned_batch` (a ``--pair_fraction`` with two objects that
differ in colour, texture and shape; a ``--large_fraction`` of the others with one large object),
each with one caption of one of its objects naming a random subset of its colour, texture and
shape ("red", "a striped circle", "a photo of a blue plain square"), drawn in a data-loader
worker. Images go through the held-out files' JPEG settings and :func:`models.vit.build_transform`
(squash to 112 px, mean and std 0.5).

The loss is the sum of two contrastive terms over ``logit_scale * cos(image, text)``:

- CLIP's symmetric cross-entropy over the batch's image-caption pairs, with several positives:
  caption ``j`` is a positive of image ``i`` whenever it describes one of its objects
  (:func:`agcam.datasets.captions.describes`), and each row's (column's) target spreads evenly
  over its positives, so "a red shape" is not pushed away from every other red image;
- ``--attribute_weight`` times a term per attribute (:func:`attribute_loss`): each image against
  the prompts of every word of one kind ("a red shape" ... "a blue shape"; "striped shape",
  "plain shape"; "a photo of a circle" ...), the target spread over its objects' words. In the
  batch term colour alone explains most pairs and the model learnt nothing else (the first
  committed model: texture and shape at chance); here texture and shape have a term colour
  cannot lower.

For the first ``--text_lock`` steps the text tower keeps its random weights (only the image
tower and the scale train). Without the lock both towers sat at a saddle: the prompts of a
texture or shape word started near each other, the images had no direction to separate along,
and the text tower learnt to read colour only ("striped shape" and "plain shape" at cosine 1.00,
measured); fixed random prompts, 0.66 apart, give the image tower directions at once, as the
fixed class vectors of a classifier do.

AdamW, warm-up then cosine decay, gradient norm clipped to 1; the logit scale is learnt
(log-parametrised, capped at 100 as in CLIP).

The weights are written as float16 safetensors; the log (``.json`` beside them) records the
arguments, wall and CPU time, the machine's load and the accuracies of the written file, reloaded:
zero-shot on the committed held-out set (8 colour-texture classes, prompts
:func:`agcam.datasets.captions.class_prompts`) and on fresh captioned images (colour, texture and
shape, each as its own 4-, 2- or 4-way zero-shot task).
"""
from __future__ import annotations

import argparse
import json
import math
import os
from typing import Dict, Iterator, List, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, IterableDataset

from agcam.datasets.captions import (
    COLOUR_WORDS,
    KIND_NAMES,
    PREFIXES,
    SHAPE_WORDS,
    TEXTURE_WORDS,
    CaptionedImage,
    class_prompts,
    describes,
    random_caption,
    sample_captioned_batch,
)
from agcam.datasets.synthetic import jpeg_roundtrip
from agcam.train.common import RunClock, learning_rate, run_record, write_run
from agcam.train.learnt import HELDOUT_ROOT
from models.clip import (
    LEARNT_CLIP,
    LEARNT_CLIP_LOG,
    LEARNT_CLIP_WEIGHTS,
    learnt_clip,
    learnt_state_dict,
    load_learnt_clip,
)

TRAIN_SEED = 100
FRESH_SEED = 107
#: the largest logit scale (CLIP's cap)
MAX_SCALE = 100.0


#: the attribute kinds of a caption: (name, words, the prompt after the prefix)
KINDS: Tuple[Tuple[str, Sequence[str], str], ...] = tuple(zip(
    KIND_NAMES, (COLOUR_WORDS, TEXTURE_WORDS, SHAPE_WORDS), ("{} shape", "{} shape", "{}")))

Batch = Tuple[torch.Tensor, torch.Tensor, torch.Tensor, List[torch.Tensor], List[torch.Tensor]]


def attribute_prompts(rng: np.random.Generator) -> List[List[str]]:
    """Per kind, a prompt per word, all with one random prefix: ``["a red shape", "a yellow
    shape", ...]``, ``["striped shape", ...]``, ``["a photo of a circle", ...]``."""
    out = []
    for _, words, template in KINDS:
        prefix = PREFIXES[int(rng.integers(len(PREFIXES)))]
        out.append([prefix + template.format(w) for w in words])
    return out


def attribute_targets(items: List[CaptionedImage]) -> List[torch.Tensor]:
    """Per kind, ``[B, words]``: each object of an image an equal share of its word."""
    out = []
    for name, words, _ in KINDS:
        target = torch.zeros(len(items), len(words))
        for row, item in enumerate(items):
            for obj in item.objects:
                target[row, words.index(getattr(obj, name))] += 1.0 / len(item.objects)
        out.append(target)
    return out


def captioned_batch(items: List[CaptionedImage], transform, tokenizer, seed: int, step: int,
                    full: float = 0.0) -> Batch:
    """``(images [B, 3, H, W], tokens [B, T], positives [B images, B captions] bool, attribute
    prompts' tokens per kind, attribute targets per kind)``."""
    rng = np.random.default_rng([seed, step, 5])
    images = torch.stack([transform(jpeg_roundtrip(item.pixels)) for item in items])
    captions, attributes = [], []
    for item in items:
        obj = item.objects[int(rng.integers(len(item.objects)))]
        text, attrs = random_caption(rng, obj, full)
        captions.append(text)
        attributes.append(attrs)
    positives = torch.tensor([[describes(a, item) for a in attributes] for item in items])
    prompts = [tokenizer(p) for p in attribute_prompts(rng)]
    return images, tokenizer(captions), positives, prompts, attribute_targets(items)


class CaptionedBatches(IterableDataset):
    def __init__(self, seed: int, steps: int, batch_size: int, pair_fraction: float, transform,
                 tokenizer, full: float = 0.0, large_fraction: float = 0.0):
        self.seed, self.steps, self.batch_size, self.full = seed, steps, batch_size, full
        self.pair_fraction, self.transform, self.tokenizer = pair_fraction, transform, tokenizer
        self.large_fraction = large_fraction

    def __iter__(self) -> Iterator[Batch]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        for step in range(worker, self.steps, workers):
            items = sample_captioned_batch(self.seed, step * self.batch_size, self.batch_size,
                                           self.pair_fraction,
                                           large_fraction=self.large_fraction)
            yield captioned_batch(items, self.transform, self.tokenizer, self.seed, step,
                                  self.full)


def multi_positive_loss(logits: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """CLIP's symmetric cross-entropy with every positive of a row (column) sharing its target."""
    targets = positives.to(logits.dtype)
    rows = -(targets / targets.sum(1, keepdim=True) * F.log_softmax(logits, 1)).sum(1).mean()
    cols = -(targets / targets.sum(0, keepdim=True) * F.log_softmax(logits, 0)).sum(0).mean()
    return (rows + cols) / 2


def attribute_loss(image: torch.Tensor, text_tower, scale: torch.Tensor,
                   prompts: List[torch.Tensor], targets: List[torch.Tensor]) -> torch.Tensor:
    """The mean over the kinds of the cross-entropy of each image against the prompts of one
    kind (its four colours, its two textures, its four shapes), scored as the batch is
    (``scale * cos``), the targets spread over the image's objects: a contrastive term per
    attribute, which colour cannot explain away."""
    total = image.new_zeros(())
    for tokens, target in zip(prompts, targets):
        text = F.normalize(text_tower.forward_tokens(tokens), dim=-1)
        total = total - (target * F.log_softmax(scale * image @ text.T, dim=1)).sum(1).mean()
    return total / len(prompts)


@torch.no_grad()
def zero_shot_accuracy(model, images: torch.Tensor, labels: torch.Tensor, prompts: List[str],
                       batch_size: int = 128) -> float:
    text = F.normalize(model.encode_text(prompts), dim=-1)
    correct = 0
    for start in range(0, len(images), batch_size):
        emb = F.normalize(model.encode_image(images[start:start + batch_size]), dim=-1)
        correct += int(((emb @ text.T).argmax(1) == labels[start:start + batch_size]).sum())
    return correct / max(1, len(images))


def heldout_zero_shot(model, root: str = HELDOUT_ROOT) -> Tuple[float, int]:
    """Zero-shot accuracy on the committed held-out set (8 classes, :func:`class_prompts`)."""
    from agcam.datasets.ilsvrc import find_samples
    from models.vit import build_transform, load_image
    transform = build_transform(model.visual)
    samples = find_samples(root)
    images = torch.stack([transform(load_image(s.path)) for s in samples])
    labels = torch.tensor([s.label for s in samples])
    return zero_shot_accuracy(model, images, labels, class_prompts()), len(samples)


def fresh_zero_shot(model, count: int) -> Dict[str, float]:
    """Zero-shot accuracy of each attribute (prompts "a <word> shape" / "a <shape>") on ``count``
    fresh single-object images of the stream :data:`FRESH_SEED`."""
    from models.vit import build_transform
    items = sample_captioned_batch(FRESH_SEED, 0, count)
    transform = build_transform(model.visual)
    images = torch.stack([transform(jpeg_roundtrip(item.pixels)) for item in items])
    out = {}
    for kind, words, template in KINDS:
        labels = torch.tensor([words.index(getattr(item.objects[0], kind)) for item in items])
        out[kind] = zero_shot_accuracy(model, images, labels,
                                       ["a " + template.format(w) for w in words])
    return out


def train(args: argparse.Namespace) -> Dict[str, object]:
    from safetensors.torch import save_file

    from models.vit import build_transform

    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    torch.set_num_threads(args.threads)
    model = learnt_clip()
    log_scale = torch.nn.Parameter(torch.tensor(math.log(1 / 0.07)))
    transform = build_transform(model.visual)
    named = list(model.named_parameters())
    decay = [p for n, p in named if p.ndim > 1 and "pos" not in n and "embedding" not in n]
    no_decay = [p for n, p in named if not (p.ndim > 1 and "pos" not in n
                                            and "embedding" not in n)] + [log_scale]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=args.lr)
    data = CaptionedBatches(TRAIN_SEED + args.seed, args.steps, args.batch_size,
                            args.pair_fraction, transform, model.text.tokenizer,
                            args.full_caption, args.large_fraction)
    loader = DataLoader(data, batch_size=None, num_workers=args.workers,
                        prefetch_factor=4 if args.workers else None)
    log: List[Dict[str, float]] = []
    clock = RunClock()
    model.train()
    sums = {"loss": 0.0, "clip": 0.0, "attributes": 0.0}
    for step, (images, tokens, positives, prompts, targets) in enumerate(loader):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, args.steps, args.lr, args.warmup)
        model.text.requires_grad_(step >= args.text_lock)
        scale = log_scale.exp().clamp(max=MAX_SCALE)
        image = F.normalize(model.visual(images), dim=-1)
        text = F.normalize(model.text.forward_tokens(tokens), dim=-1)
        clip = multi_positive_loss(scale * image @ text.T, positives)
        attributes = attribute_loss(image, model.text, scale, prompts, targets) \
            if args.attribute_weight else clip.new_zeros(())
        loss = clip + args.attribute_weight * attributes
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        for key, value in (("loss", loss), ("clip", clip), ("attributes", attributes)):
            sums[key] += float(value.detach())
        if (step + 1) % args.log_every == 0 or step + 1 == args.steps:
            entry = {"step": step + 1, "seconds": round(clock.elapsed(), 1),
                     **{k: round(v / args.log_every, 4) for k, v in sums.items()},
                     "scale": round(float(log_scale.detach().exp()), 2)}
            log.append(entry)
            print(json.dumps(entry), flush=True)
            sums = dict.fromkeys(sums, 0.0)
    del loader  # joins the workers, so that their CPU time is counted
    cost = clock.stop()
    with torch.no_grad():
        log_scale.clamp_(max=math.log(MAX_SCALE))
    state = {k: v.to(torch.float16).contiguous()
             for k, v in learnt_state_dict(model, log_scale).items()}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    save_file(state, args.out, metadata={"model": LEARNT_CLIP, "format": "pt"})
    written = load_learnt_clip(args.out)
    result = run_record(LEARNT_CLIP, args.out, written, args, cost, log)
    result["logit_scale"] = round(float(written.logit_scale), 3)
    if os.path.isdir(args.heldout):
        acc, count = heldout_zero_shot(written, args.heldout)
        result.update(heldout_zero_shot_accuracy=acc, heldout_images=count)
    if args.fresh_images:
        result.update(fresh_zero_shot_accuracy=fresh_zero_shot(written, args.fresh_images),
                      fresh_images=args.fresh_images)
    return result


def run(args: argparse.Namespace) -> int:
    """Train as the flags of ``agcam train-clip`` say, write the weights and the log beside
    them; the exit code."""
    print(json.dumps(vars(args)), flush=True)
    return write_run(train(args), args.out, LEARNT_CLIP_WEIGHTS, LEARNT_CLIP_LOG,
                     ("train_seconds", "train_cpu_seconds", "weights_bytes",
                      "heldout_zero_shot_accuracy", "fresh_zero_shot_accuracy",
                      "load_average_start", "load_average_end"))
