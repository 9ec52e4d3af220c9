"""Train ``clip_agcam_learnt``: a small CLIP learnt contrastively on captioned synthetic shapes.

    python -m agcam.train.clip                  # writes models/weights/clip_agcam_learnt.*
    python -m agcam.train.clip --out /tmp/c.safetensors --steps 100     # a shorter run

Batch ``b`` is images ``b * batch_size ...`` of the stream ``--seed`` of
:func:`agcam.datasets.captions.sample_captioned_batch` (a ``--pair_fraction`` with two objects that
differ in colour, texture and shape), each with one caption of one of its objects naming a random
subset of its colour, texture and shape ("red", "a striped circle", "a photo of a blue plain
square"), drawn in a data-loader worker. Images go through the held-out files' JPEG settings and
:func:`models.vit.build_transform` (squash to 112 px, mean and std 0.5).

The loss is CLIP's symmetric cross-entropy over the batch's image-caption similarities, with
several positives: caption ``j`` is a positive of image ``i`` whenever it describes one of its
objects (:func:`agcam.datasets.captions.describes`), and each row's (column's) target spreads
evenly over its positives, so "a red shape" is not pushed away from every other red image.
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
import platform
import sys
import time
from typing import Dict, Iterator, List, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, IterableDataset

from agcam.datasets.captions import (
    COLOUR_WORDS,
    SHAPE_WORDS,
    TEXTURE_WORDS,
    CaptionedImage,
    class_prompts,
    describes,
    random_caption,
    sample_captioned_batch,
)
from agcam.datasets.synthetic import jpeg_roundtrip
from agcam.train.learnt import HELDOUT_ROOT, cpu_seconds, learning_rate, load_average
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


def captioned_batch(items: List[CaptionedImage], transform, tokenizer, seed: int, step: int,
                    full: float = 0.0) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(images [B, 3, H, W], tokens [B, T], positives [B images, B captions] bool)``."""
    rng = np.random.default_rng([seed, step, 5])
    images = torch.stack([transform(jpeg_roundtrip(item.pixels)) for item in items])
    captions, attributes = [], []
    for item in items:
        obj = item.objects[int(rng.integers(len(item.objects)))]
        text, attrs = random_caption(rng, obj, full)
        captions.append(text)
        attributes.append(attrs)
    positives = torch.tensor([[describes(a, item) for a in attributes] for item in items])
    return images, tokenizer(captions), positives


class CaptionedBatches(IterableDataset):
    def __init__(self, seed: int, steps: int, batch_size: int, pair_fraction: float, transform,
                 tokenizer, full: float = 0.0):
        self.seed, self.steps, self.batch_size, self.full = seed, steps, batch_size, full
        self.pair_fraction, self.transform, self.tokenizer = pair_fraction, transform, tokenizer

    def __iter__(self) -> Iterator[Tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        for step in range(worker, self.steps, workers):
            items = sample_captioned_batch(self.seed, step * self.batch_size, self.batch_size,
                                           self.pair_fraction)
            yield captioned_batch(items, self.transform, self.tokenizer, self.seed, step,
                                  self.full)


def multi_positive_loss(logits: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """CLIP's symmetric cross-entropy with every positive of a row (column) sharing its target."""
    targets = positives.to(logits.dtype)
    rows = -(targets / targets.sum(1, keepdim=True) * F.log_softmax(logits, 1)).sum(1).mean()
    cols = -(targets / targets.sum(0, keepdim=True) * F.log_softmax(logits, 0)).sum(0).mean()
    return (rows + cols) / 2


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
    for kind, words, template in (("colour", COLOUR_WORDS, "a {} shape"),
                                  ("texture", TEXTURE_WORDS, "a {} shape"),
                                  ("shape", SHAPE_WORDS, "a {}")):
        labels = torch.tensor([words.index(getattr(item.objects[0], kind)) for item in items])
        out[kind] = zero_shot_accuracy(model, images, labels, [template.format(w) for w in words])
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
                            args.full_caption)
    loader = DataLoader(data, batch_size=None, num_workers=args.workers,
                        prefetch_factor=4 if args.workers else None)
    log: List[Dict[str, float]] = []
    load_start, cpu_start = load_average(), cpu_seconds()
    start = time.perf_counter()
    model.train()
    loss_sum = 0.0
    for step, (images, tokens, positives) in enumerate(loader):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, args.steps, args.lr, args.warmup)
        image = F.normalize(model.visual(images), dim=-1)
        text = F.normalize(model.text.forward_tokens(tokens), dim=-1)
        logits = log_scale.exp().clamp(max=MAX_SCALE) * image @ text.T
        loss = multi_positive_loss(logits, positives)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        loss_sum += float(loss.detach())
        if (step + 1) % args.log_every == 0 or step + 1 == args.steps:
            entry = {"step": step + 1, "seconds": round(time.perf_counter() - start, 1),
                     "loss": round(loss_sum / args.log_every, 4),
                     "scale": round(float(log_scale.detach().exp()), 2)}
            log.append(entry)
            print(json.dumps(entry), flush=True)
            loss_sum = 0.0
    seconds = time.perf_counter() - start
    del loader
    cpu = {k: round(v - cpu_start[k], 1) for k, v in cpu_seconds().items()}
    load_end = load_average()
    with torch.no_grad():
        log_scale.clamp_(max=math.log(MAX_SCALE))
    state = {k: v.to(torch.float16).contiguous()
             for k, v in learnt_state_dict(model, log_scale).items()}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    save_file(state, args.out, metadata={"model": LEARNT_CLIP, "format": "pt"})
    written = load_learnt_clip(args.out)
    result: Dict[str, object] = {
        "model": LEARNT_CLIP, "weights": os.path.basename(args.out),
        "weights_bytes": os.path.getsize(args.out),
        "parameters": sum(p.numel() for p in written.parameters()),
        "logit_scale": round(float(written.logit_scale), 3),
        "train_seconds": round(seconds, 1), "train_cpu_seconds": cpu,
        "images_seen": args.steps * args.batch_size, "torch_threads": args.threads,
        "loader_workers": args.workers, "cpu_count": os.cpu_count(),
        "load_average_start": load_start, "load_average_end": load_end,
        "machine": platform.processor() or platform.machine(), "torch": torch.__version__,
        "args": vars(args), "log": log,
    }
    if os.path.isdir(args.heldout):
        acc, count = heldout_zero_shot(written, args.heldout)
        result.update(heldout_zero_shot_accuracy=acc, heldout_images=count)
    if args.fresh_images:
        result.update(fresh_zero_shot_accuracy=fresh_zero_shot(written, args.fresh_images),
                      fresh_images=args.fresh_images)
    return result


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        "clip", description="Train clip_agcam_learnt on captioned synthetic shapes (CPU, seeded).")
    parser.add_argument("--steps", type=int, default=700)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--weight_decay", type=float, default=0.05)
    parser.add_argument("--pair_fraction", type=float, default=0.3)
    parser.add_argument("--full_caption", type=float, default=0.0,
                        help="probability that a caption names colour, texture and shape")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--log_every", type=int, default=50)
    parser.add_argument("--out", default=LEARNT_CLIP_WEIGHTS)
    parser.add_argument("--heldout", default=HELDOUT_ROOT)
    parser.add_argument("--fresh_images", type=int, default=1000)
    return parser


def main(args: argparse.Namespace) -> int:
    print(json.dumps(vars(args)), flush=True)
    result = train(args)
    log_path = os.path.splitext(args.out)[0] + ".json"
    if os.path.abspath(args.out) == os.path.abspath(LEARNT_CLIP_WEIGHTS):
        log_path = LEARNT_CLIP_LOG
    with open(log_path, "w") as handle:
        json.dump(result, handle, indent=2)
        handle.write("\n")
    summary = {k: result[k] for k in ("train_seconds", "train_cpu_seconds", "weights_bytes",
                                      "heldout_zero_shot_accuracy", "fresh_zero_shot_accuracy")
               if k in result}
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
