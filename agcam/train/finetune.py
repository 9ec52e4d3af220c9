"""Fine-tune the paper's ViT on Pascal VOC 2012 or CUB-200-2011 (``agcam finetune``).

    agcam finetune --dataset voc --data_root ./VOC --out ./voc_vit
    agcam finetune --dataset cub --data_root ./CUB --out ./cub_vit
    torchrun --nproc_per_node 4 -m agcam finetune --dataset cub --data_root ./CUB ...

Neither data set has an ImageNet head, so the paper's Tables 2 and 3 were made with models the
authors fine-tuned and never published. This starts from the paper's weights (the hub, or
``--checkpoint``), replaces the head by a zero-initialised one with the data set's classes (as
the ViT paper fine-tunes) and trains every weight on the training split (VOC: the single-class
images of ``train``; CUB: ``train``). Optimizer, learning-rate schedule and training augmentation
come from timm's factories (``create_optimizer_v2``, ``create_scheduler_v2``,
``create_transform``); validation uses the paper's evaluation preprocessing (squash ``Resize``,
mean/std of the model: 0.5), the same loader as ``localization.py``.

``<output>/model.pth`` is what ``localization.py`` / ``save_h5.py`` / ``ABPC.py --checkpoint``
read (``{"model": state dict, "dataset", "classes", "recipe", "history"}``), with the same
metadata in ``<output>/model.json``. ``<output>/last.pth`` is written after every epoch
(optimizer and schedule included): the same command after a kill resumes from it.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from typing import Any, Dict, Tuple

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from agcam.errors import UsageError
from agcam.runtime import model_from_args, print_args, resolve_device, seed_everything, typed

#: test hook: SIGKILL this process right after the checkpoint of this epoch (1-based) is written

#: the recipe entries that must match for a run to resume from ``last.pth``
RECIPE_KEYS = ("dataset", "train_split", "model", "checkpoint", "limit", "epochs", "batch_size",
               "world_size", "opt", "lr", "momentum", "weight_decay", "sched", "warmup_epochs",
               "warmup_lr", "min_lr", "clip_grad", "smoothing", "scale", "color_jitter",
               "auto_augment", "seed")


class TrainDataset(Dataset):
    """``(augmented image tensor, label)`` of each sample, decoded in the loader workers."""

    def __init__(self, samples, transform):
        self.samples = list(samples)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        from models.vit import load_image
        sample = self.samples[index]
        return self.transform(load_image(sample.path)), sample.label


def train_transform(model: nn.Module, args: argparse.Namespace):
    """timm's training augmentation at the model's input size, normalised with the model's
    mean/std (0.5 for the paper's weights), bilinear like the evaluation ``Resize``."""
    from timm.data import create_transform

    from models.vit import model_geometry
    geometry = model_geometry(model)
    return create_transform(tuple(geometry.input_size), is_training=True,
                            scale=tuple(args.scale), color_jitter=args.color_jitter,
                            auto_augment=args.auto_augment, interpolation="bilinear",
                            mean=geometry.mean, std=geometry.std)


def new_head(model: nn.Module, num_classes: int) -> None:
    """Replace the classifier by a zero-initialised one with ``num_classes`` outputs."""
    model.reset_classifier(num_classes)
    head = model.get_classifier()
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)


def recipe_of(args: argparse.Namespace, world_size: int) -> Dict[str, Any]:
    recipe = {key: getattr(args, key, None) for key in RECIPE_KEYS if key != "world_size"}
    recipe["scale"] = list(args.scale)
    recipe["world_size"] = world_size
    recipe["checkpoint"] = os.path.basename(args.checkpoint) if args.checkpoint else None
    recipe["eval_preprocessing"] = "Resize(input_size, bilinear, squash) + ToTensor + " \
                                   "Normalize(model mean/std)"
    recipe["head"] = "zero-initialised Linear"
    recipe["precision"] = "bf16 autocast on CUDA, float32 on CPU"
    return recipe


def autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def validate(model: nn.Module, loader, device: torch.device, ctx) -> Tuple[float, float, int]:
    """``(mean loss, accuracy, images)`` over every process's shard of the validation set."""
    from agcam import distributed
    model.eval()
    loss_sum, correct, count = 0.0, 0, 0
    for batch in loader:
        valid = batch["valid"]
        if not valid.any():
            continue
        inputs = batch["input"][valid].to(device, non_blocking=True)
        labels = batch["label"][valid].to(device)
        with autocast(device):
            logits = model(inputs)
        logits = logits.float()
        loss_sum += float(nn.functional.cross_entropy(logits, labels, reduction="sum"))
        correct += int((logits.argmax(1) == labels).sum())
        count += int(valid.sum())
    parts = distributed.gather_to_main([(loss_sum, correct, count)], ctx)
    parts = distributed.broadcast_from_main(parts, ctx)
    loss_sum, correct, count = (sum(p[i] for p in parts) for i in range(3))
    return loss_sum / max(count, 1), correct / max(count, 1), count


def _save(obj: Dict[str, Any], path: str) -> None:
    tmp = path + ".tmp"
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _load_resume(path: str, recipe: Dict[str, Any]) -> Dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UsageError(f"{path}: cannot be read to resume ({type(exc).__name__}: {exc}); "
                         "delete it to start over") from None
    old = state.get("recipe", {})
    changed = [f"{k} {old.get(k)!r} (now {recipe.get(k)!r})" for k in RECIPE_KEYS
               if old.get(k) != recipe.get(k)]
    if changed:
        raise UsageError(f"{path} was written with another recipe ({'; '.join(changed)}); "
                         "rerun with the same flags, or choose another --out")
    return state


def run(args: argparse.Namespace, spec) -> int:
    """Fine-tune as the flags say (checked by :mod:`agcam.cli.finetune`) on the data set
    ``spec``; the exit code."""
    from agcam import distributed
    from agcam.datasets import list_split

    train = list_split(spec, args.data_root, args.train_split, limit=args.limit)
    val = None
    if args.val_split.lower() != "none":
        val = list_split(spec, args.data_root, args.val_split, limit=args.val_limit)
    try:
        os.makedirs(args.out, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"{typed(args, 'out')} {args.out}: cannot be created "
                         f"({exc.strerror})") from None
    ctx = distributed.init_distributed(resolve_device(args.device))
    try:
        return _run(args, spec, train, val, ctx)
    finally:
        distributed.cleanup(ctx)


def _run(args, spec, train, val, ctx) -> int:
    """Train on the listing ``train``, validating on ``val`` (or not, when ``None``)."""
    from timm.loss import LabelSmoothingCrossEntropy
    from timm.optim import create_optimizer_v2
    from timm.scheduler import create_scheduler_v2
    from tqdm import tqdm

    from agcam import distributed
    from agcam.datasets import ValDataset, make_loader

    device = ctx.device
    final_path = os.path.join(args.out, "model.pth")
    last_path = os.path.join(args.out, "last.pth")
    recipe = recipe_of(args, ctx.world_size)
    if ctx.is_main:
        print_args(args)
        print(train.describe(), flush=True)
        if val is not None:
            print(val.describe(), flush=True)
    seed_everything(args.seed)
    model = model_from_args(args, torch.device("cpu"))
    new_head(model, spec.num_classes)
    model.to(device)
    train_set = TrainDataset(train.samples, train_transform(model, args))
    sampler = DistributedSampler(train_set, num_replicas=ctx.world_size, rank=ctx.rank,
                                 shuffle=True, seed=args.seed, drop_last=False)
    loader = DataLoader(train_set, batch_size=args.batch_size, sampler=sampler,
                        num_workers=args.num_workers, pin_memory=device.type == "cuda",
                        drop_last=False, persistent_workers=False)
    val_loader = None
    if val is not None:
        val_loader = make_loader(ValDataset(val.samples, model, keep_image=False),
                                 batch_size=args.batch_size, num_workers=args.num_workers,
                                 rank=ctx.rank, world_size=ctx.world_size,
                                 pin_memory=device.type == "cuda")
    optimizer = create_optimizer_v2(model, opt=args.opt, lr=args.lr,
                                    weight_decay=args.weight_decay, momentum=args.momentum)
    updates_per_epoch = len(loader)
    scheduler, _ = create_scheduler_v2(optimizer, sched=args.sched, num_epochs=args.epochs,
                                       warmup_epochs=args.warmup_epochs,
                                       warmup_lr=args.warmup_lr, min_lr=args.min_lr,
                                       step_on_epochs=False, updates_per_epoch=updates_per_epoch)
    criterion = LabelSmoothingCrossEntropy(args.smoothing) if args.smoothing > 0 else \
        nn.CrossEntropyLoss()

    start_epoch, history = 0, []
    if os.path.isfile(last_path):
        state = _load_resume(last_path, recipe)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch, history = int(state["epoch"]), list(state.get("history", []))
        if ctx.is_main:
            print(f"resuming {last_path} after epoch {start_epoch} of {args.epochs}", flush=True)
    if start_epoch == 0 and val_loader is not None:
        loss, accuracy, count = validate(model, val_loader, device, ctx)
        history.append({"epoch": 0, "val_loss": loss, "val_accuracy": accuracy})
        if ctx.is_main:
            print(f"epoch 0 (before training): val loss {loss:.4f}, val accuracy "
                  f"{100 * accuracy:.2f}% ({count} images)", flush=True)

    train_model = model
    if ctx.distributed:
        train_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    for epoch in range(start_epoch, args.epochs):
        # Every epoch's randomness comes from (seed, epoch): a resumed run draws what an
        # uninterrupted one would.
        seed_everything(args.seed + epoch)
        sampler.set_epoch(epoch)
        train_model.train()
        tick = time.perf_counter()
        loss_sum, seen = 0.0, 0
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{args.epochs}", unit="step",
                   disable=not ctx.is_main or args.no_progress, file=sys.stderr,
                   dynamic_ncols=True)
        for step, (images, labels) in enumerate(bar):
            images = images.to(device, non_blocking=True)
            labels = labels.to(device, non_blocking=True)
            with autocast(device):
                loss = criterion(train_model(images), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if args.clip_grad > 0:
                nn.utils.clip_grad_norm_(model.parameters(), args.clip_grad)
            optimizer.step()
            scheduler.step_update(num_updates=epoch * updates_per_epoch + step + 1)
            loss_sum += float(loss.detach()) * len(labels)
            seen += len(labels)
            bar.set_postfix(loss=f"{float(loss.detach()):.4f}",
                            lr=f"{optimizer.param_groups[0]['lr']:.2e}")
        bar.close()
        scheduler.step(epoch + 1)
        seconds = time.perf_counter() - tick
        parts = distributed.gather_to_main([(loss_sum, seen)], ctx)
        parts = distributed.broadcast_from_main(parts, ctx)
        train_loss = sum(p[0] for p in parts) / max(sum(p[1] for p in parts), 1)
        entry = {"epoch": epoch + 1, "train_loss": train_loss, "seconds": seconds,
                 "seconds_per_step": seconds / max(updates_per_epoch, 1)}
        line = f"epoch {epoch + 1}/{args.epochs}: train loss {train_loss:.4f}"
        if val_loader is not None:
            loss, accuracy, count = validate(model, val_loader, device, ctx)
            entry.update(val_loss=loss, val_accuracy=accuracy)
            line += f", val loss {loss:.4f}, val accuracy {100 * accuracy:.2f}% ({count} images)"
        history.append(entry)
        if ctx.is_main:
            print(f"{line}, {seconds:.1f} s ({entry['seconds_per_step']:.3f} s/step)",
                  flush=True)
            _save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                   "scheduler": scheduler.state_dict(), "epoch": epoch + 1, "recipe": recipe,
                   "dataset": spec.name, "classes": list(train.class_names),
                   "history": history}, last_path)
    if ctx.is_main:
        meta = {"dataset": spec.name, "classes": list(train.class_names), "recipe": recipe,
                "history": history, "model_name": args.model}
        _save(dict(meta, model=model.state_dict()), final_path)
        with open(os.path.join(args.out, "model.json"), "w") as handle:
            json.dump(dict(meta, weights=os.path.basename(final_path)), handle, indent=2)
            handle.write("\n")
        print(f"wrote {final_path} (use: --model {args.model} --checkpoint {final_path} "
              f"--dataset {spec.name})", flush=True)
    return 0

