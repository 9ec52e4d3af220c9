"""Train ``vit_agcam_learnt`` from scratch on the synthetic shapes, on a CPU, seeded.

    agcam train-learnt                     # writes models/weights/vit_agcam_learnt.*
    agcam train-learnt --out /tmp/w.safetensors --steps 200   # a shorter run

Images are drawn on the fly (:func:`agcam.datasets.synthetic.sample_batch`): batch ``b`` is
images ``b * batch_size ...`` of the stream ``--seed``, made in a data-loader worker while the
model trains on the previous batch, and preprocessed exactly as the scripts preprocess the
held-out JPEGs (:func:`models.vit.build_transform`: squash-resize to the model's input size,
bilinear, then normalise with its mean and std). A ``--pair_fraction`` of the images hold two
objects of different classes; their target puts half the probability on each (soft-target
cross-entropy), so the model learns to see both and a class-specific map has something to pick.

AdamW, linear warm-up then cosine decay to zero, gradient norm clipped to 1. The weights are
written as float16 safetensors; the accuracy reported is that of the written file, reloaded
through :func:`models.vit.create_model`, on the committed held-out set (read by the ILSVRC
reader, as ``localization.py`` reads it) and on fresh images of another stream. The log
(``.json`` beside the weights) records the arguments, the wall time, the torch threads and the
machine's load average, so the time can be judged.
"""
from __future__ import annotations

import argparse
import json
import os
from typing import Dict, Iterator, List, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, IterableDataset

from agcam.datasets.synthetic import CLASSES, SynthImage, jpeg_roundtrip, sample_batch
from agcam.train.common import RunClock, learning_rate, run_record, write_run
from models.learnt import LEARNT_LOG, LEARNT_MODEL, LEARNT_WEIGHTS

#: the stream of the training images (the held-out set is HELDOUT_SEED, the fresh check
#: images FRESH_SEED: three disjoint streams)
TRAIN_SEED = 0
FRESH_SEED = 7
HELDOUT_ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "samples", "synthetic", "ILSVRC")


def to_tensors(items: List[SynthImage], transform, num_classes: int
               ) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(inputs [B, 3, H, W], soft targets [B, num_classes])``: each object of an image gets an
    equal share of its target. Every image goes through the held-out files' JPEG settings
    first, so that training sees what evaluation reads."""
    inputs = torch.stack([transform(jpeg_roundtrip(item.pixels)) for item in items])
    targets = torch.zeros(len(items), num_classes)
    for row, item in enumerate(items):
        for obj in item.objects:
            targets[row, obj.label] += 1.0 / len(item.objects)
    return inputs, targets


class SyntheticBatches(IterableDataset):
    """Batches ``first, first + 1, ..., steps - 1`` of the stream ``seed`` (each a function of
    its index only; several workers split the indices between them)."""

    def __init__(self, seed: int, steps: int, batch_size: int, pair_fraction: float, transform,
                 num_classes: int, first: int = 0):
        self.seed, self.steps, self.batch_size = seed, steps, batch_size
        self.pair_fraction, self.transform, self.num_classes = pair_fraction, transform, num_classes
        self.first = first

    def __iter__(self) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        for step in range(self.first + worker, self.steps, workers):
            items = sample_batch(self.seed, step * self.batch_size, self.batch_size,
                                 self.pair_fraction)
            yield to_tensors(items, self.transform, self.num_classes)


@torch.no_grad()
def accuracy(model: torch.nn.Module, inputs: torch.Tensor, labels: torch.Tensor,
             batch_size: int = 128) -> float:
    model.eval()
    correct = 0
    for start in range(0, len(inputs), batch_size):
        logits = model(inputs[start:start + batch_size])
        correct += int((logits.argmax(dim=1) == labels[start:start + batch_size]).sum())
    return correct / max(1, len(inputs))


def heldout_accuracy(model: torch.nn.Module, root: str) -> Tuple[float, int]:
    """Accuracy on the committed held-out set, read by the ILSVRC reader (labels from the
    folders) and preprocessed by :func:`models.vit.build_transform`."""
    from agcam.datasets.ilsvrc import find_samples
    from models.vit import build_transform, load_image
    transform = build_transform(model)
    samples = find_samples(root)
    inputs = torch.stack([transform(load_image(s.path)) for s in samples])
    labels = torch.tensor([s.label for s in samples])
    return accuracy(model, inputs, labels), len(samples)


def fresh_accuracy(model: torch.nn.Module, count: int, pair_fraction: float = 0.0
                   ) -> float:
    """Accuracy on ``count`` single-object images of the stream :data:`FRESH_SEED`."""
    from models.vit import build_transform
    items = sample_batch(FRESH_SEED, 0, count, pair_fraction)
    inputs, _ = to_tensors(items, build_transform(model), len(CLASSES))
    return accuracy(model, inputs, torch.tensor([item.label for item in items]))


def save_weights(model: torch.nn.Module, path: str) -> None:
    """The state dict as float16 safetensors (half the bytes; the accuracy is measured on it)."""
    from safetensors.torch import save_file
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    save_file(state, path, metadata={"model": LEARNT_MODEL, "format": "pt"})


def train(args: argparse.Namespace) -> Dict[str, object]:
    import timm

    import models  # noqa: F401  (registers vit_agcam_learnt)
    from models.vit import build_transform, create_model

    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    torch.set_num_threads(args.threads)
    model = timm.create_model(LEARNT_MODEL, pretrained=False)
    num_classes = model.num_classes
    if num_classes != len(CLASSES):
        raise ValueError(f"{LEARNT_MODEL} has {num_classes} outputs for {len(CLASSES)} classes")
    transform = build_transform(model)
    decay = [p for n, p in model.named_parameters() if p.ndim > 1 and "pos_embed" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim > 1 and
                                                               "pos_embed" not in n)]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=args.lr)
    data = SyntheticBatches(TRAIN_SEED + args.seed, args.steps, args.batch_size,
                            args.pair_fraction, transform, num_classes)
    loader = DataLoader(data, batch_size=None, num_workers=args.workers,
                        persistent_workers=False, prefetch_factor=4 if args.workers else None)
    log: List[Dict[str, float]] = []
    clock = RunClock()
    model.train()
    seen = correct = 0
    loss_sum = 0.0
    for step, (inputs, targets) in enumerate(loader):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, args.steps, args.lr, args.warmup)
        logits = model(inputs)
        loss = torch.sum(-targets * F.log_softmax(logits, dim=1), dim=1).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        single = targets.max(dim=1).values == 1.0
        seen += int(single.sum())
        correct += int((logits.argmax(1) == targets.argmax(1))[single].sum())
        loss_sum += float(loss.detach())
        if (step + 1) % args.log_every == 0 or step + 1 == args.steps:
            entry = {"step": step + 1, "seconds": round(clock.elapsed(), 1),
                     "loss": round(loss_sum / args.log_every, 4),
                     "train_accuracy": round(correct / max(1, seen), 4)}
            log.append(entry)
            print(json.dumps(entry), flush=True)
            seen = correct = 0
            loss_sum = 0.0
    del loader  # joins the workers, so that their CPU time is counted
    cost = clock.stop()
    save_weights(model, args.out)
    # the accuracy of the file as written (float16), loaded as every script loads it
    written = create_model(LEARNT_MODEL, checkpoint=args.out)
    result = run_record(LEARNT_MODEL, args.out, written, args, cost, log)
    if os.path.isdir(args.heldout):
        acc, count = heldout_accuracy(written, args.heldout)
        result.update(heldout_accuracy=acc, heldout_images=count)
    if args.fresh_images:
        result.update(fresh_accuracy=fresh_accuracy(written, args.fresh_images),
                      fresh_images=args.fresh_images)
    return result


def run(args: argparse.Namespace) -> int:
    """Train as the flags of ``agcam train-learnt`` say, write the weights and the log beside
    them; the exit code."""
    print(json.dumps(vars(args)), flush=True)
    return write_run(train(args), args.out, LEARNT_WEIGHTS, LEARNT_LOG,
                     ("train_seconds", "train_cpu_seconds", "weights_bytes", "parameters",
                      "heldout_accuracy", "fresh_accuracy", "load_average_start",
                      "load_average_end"))
