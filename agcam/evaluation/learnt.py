"""Behaviour of every method on the learnt model: localization, ABPC and two baselines.

Equality to the released code shows that a method computes what its authors computed; it cannot
show that the method finds an object. On ``vit_agcam_learnt`` and the synthetic held-out set
(:mod:`agcam.datasets.synthetic`: boxes right by construction) it can:

- localization, the released procedure (:func:`agcam.evaluation.localization.localize_batch`):
  on every image the model classifies correctly, the predicted class's map is upsampled
  bilinearly to the input, min-max normalised, thresholded (0.5), boxed; ``IoU@0.5`` is the mean
  IoU of those boxes with the ground truth (the paper's Table 1 measure) and ``box acc`` the
  share of images whose IoU is at least 0.5;
- ABPC, the released procedure (:func:`agcam.evaluation.abpc.abpc_curves`): the label class's
  map, resized with antialiasing as ``save_h5.py`` stores it, pixels removed most / least
  relevant first;
- the baselines, through the same code: ``random`` (a uniform random map on the patch grid,
  seeded) and ``centre`` (localization: the centred box of the set's mean box width and height,
  which knows the boxes' size and so is the stronger baseline; ABPC: a centred Gaussian on the
  patch grid).

Two-object images (``pairs/`` beside the set): each class-specific method's map for each of the
two classes; counted are the maps whose maximum lies in that class's own box (a map that ignores
the class can hit at most one of an image's two), and the images where both maps have a higher
mean inside their own object's box than inside the other's (such a map never can).

    python -m agcam.evaluation.learnt                   # the table, every method, all images
    python -m agcam.evaluation.learnt --limit 16 --method agcam rollout
    python -m agcam.evaluation.learnt --precision_table  # maps at bf16 and float64 vs float32
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from agcam.datasets.common import Sample, gt_boxes
from agcam.maps import to_heatmap

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HELDOUT_ROOT = os.path.join(ROOT, "samples", "synthetic", "ILSVRC")
PAIRS_ROOT = os.path.join(ROOT, "samples", "synthetic", "pairs")
THRESHOLD = 0.5
RANDOM, CENTRE = "random", "centre"


@dataclass
class HeldOut:
    """Images of a set, preprocessed for a model: ``images`` ``[N, 3, H, W]`` (normalised),
    ``labels`` ``[N]``, ``boxes`` per image in model-input pixels, with the class of each box."""

    samples: List[Sample]
    images: torch.Tensor
    labels: torch.Tensor
    boxes: List[List[Tuple[int, int, int, int]]]
    box_classes: List[List[int]] = field(default_factory=list)

    @property
    def names(self) -> List[str]:
        return [s.name for s in self.samples]


def load_heldout(model: nn.Module, root: str = HELDOUT_ROOT, limit: Optional[int] = None
                 ) -> HeldOut:
    """The set under ``root`` (ILSVRC layout) as the scripts read it: the ILSVRC reader's labels,
    :func:`models.vit.build_transform`'s input, the boxes scaled as released."""
    from agcam.datasets.common import read_voc_xml
    from agcam.datasets.ilsvrc import ANNOTATION_DIR, find_samples, wnid_to_index
    from models.vit import build_transform, load_image, model_geometry

    samples = find_samples(root, limit=limit)
    transform = build_transform(model)
    size = model_geometry(model).input_size
    images, boxes, classes = [], [], []
    for sample in samples:
        image = load_image(sample.path)
        images.append(transform(image))
        boxes.append(gt_boxes(sample.boxes, image.width, image.height, size))
        _, _, objects = read_voc_xml(os.path.join(root, ANNOTATION_DIR, sample.name + ".xml"))
        classes.append([wnid_to_index(name) for name, _ in objects])
    return HeldOut(samples, torch.stack(images), torch.tensor([s.label for s in samples]),
                   boxes, classes)


def random_maps(count: int, grid: Tuple[int, int], seed: int = 0) -> torch.Tensor:
    """``[count, h, w]`` uniform random maps on the patch grid (seeded)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(count, *grid, generator=generator)


def centre_maps(count: int, grid: Tuple[int, int]) -> torch.Tensor:
    """``[count, h, w]`` a Gaussian centred on the patch grid (sigma a quarter of its side)."""
    h, w = grid
    y = (torch.arange(h, dtype=torch.float32) - (h - 1) / 2) / (h / 4)
    x = (torch.arange(w, dtype=torch.float32) - (w - 1) / 2) / (w / 4)
    bump = torch.exp(-0.5 * (y[:, None] ** 2 + x[None, :] ** 2))
    return bump.expand(count, h, w).clone()


def centred_box(boxes: Sequence[Sequence[Tuple[int, int, int, int]]], size: Tuple[int, int]
                ) -> Tuple[int, int, int, int]:
    """The centred box whose width and height are the mean of every image's first box."""
    widths = [b[0][2] - b[0][0] for b in boxes]
    heights = [b[0][3] - b[0][1] for b in boxes]
    height, width = size
    bw, bh = float(np.mean(widths)), float(np.mean(heights))
    x0, y0 = int(round((width - 1 - bw) / 2)), int(round((height - 1 - bh) / 2))
    return (x0, y0, x0 + int(round(bw)), y0 + int(round(bh)))


def box_ious(heatmaps: np.ndarray, boxes, threshold: float = THRESHOLD) -> np.ndarray:
    """Per image, the IoU of the boxes the ``[N, H, W]`` [0, 1] heatmaps give at ``threshold``
    with the ground truth (:func:`agcam.evaluation.localization.localize_batch`)."""
    from agcam.evaluation.box_metrics import METRICS
    from agcam.evaluation.localization import localize_batch, threshold_key
    column = METRICS.index("iou")
    return np.array([row[threshold_key(threshold)][column]
                     for row in localize_batch(heatmaps, boxes, [threshold])], dtype=np.float64)


def fixed_box_ious(box: Tuple[int, int, int, int], boxes, size: Tuple[int, int]) -> np.ndarray:
    """Per image, the IoU of one fixed box with the ground truth (the same mask metric)."""
    from agcam.evaluation.box_metrics import confusion_counts, localization_metrics
    from agcam.evaluation.boxes import boxes_to_mask
    predicted = np.stack([boxes_to_mask([box], size)] * len(boxes))
    truth = np.stack([boxes_to_mask(b, size) for b in boxes])
    return localization_metrics(*confusion_counts(predicted, truth))["iou"].astype(np.float64)


@dataclass
class _AbpcBatch:
    indices: List[int]
    names: List[str]
    labels: torch.Tensor
    images: torch.Tensor
    heatmaps: torch.Tensor


def abpc_score(model: nn.Module, data: HeldOut, maps: torch.Tensor, batch_size: int = 64
               ) -> float:
    """ABPC of raw ``[N, h, w]`` maps of the label classes on ``data`` (the released recipe:
    antialiased resize, :func:`agcam.evaluation.abpc.abpc_curves`)."""
    from agcam.evaluation.abpc import abpc_curves, summarize
    size = tuple(data.images.shape[-2:])
    batches = [_AbpcBatch(list(range(start, min(start + 32, len(data.samples)))),
                          data.names[start:start + 32], data.labels[start:start + 32],
                          data.images[start:start + 32],
                          to_heatmap(maps[start:start + 32].float(), size, recipe="abpc"))
               for start in range(0, len(data.samples), 32)]
    curves = abpc_curves(model, batches, batch_size=batch_size)
    return float(summarize(curves, "map")["abpc"])


def explain_all(explainer, images: torch.Tensor, target=None, batch_size: int = 32
                ) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(predictions [N], raw maps [N, h, w])`` in batches."""
    predictions, maps = [], []
    for start in range(0, len(images), batch_size):
        part = None if target is None else target[start:start + batch_size]
        p, m = explainer.explain(images[start:start + batch_size], part)
        predictions.append(p.cpu())
        maps.append(m.detach().float().cpu())
    return torch.cat(predictions), torch.cat(maps)


def peak_hits(heatmap_pairs: Sequence[Tuple[np.ndarray, np.ndarray]],
              box_pairs: Sequence[Sequence[Tuple[int, int, int, int]]]) -> Tuple[int, int]:
    """How many maps peak inside their own class's box: ``(hits, maps)``; ``heatmap_pairs[i]``
    holds image ``i``'s map of its first and of its second object's class."""
    hits = total = 0
    for maps, boxes in zip(heatmap_pairs, box_pairs):
        for heatmap, (x0, y0, x1, y1) in zip(maps, boxes):
            y, x = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)
            hits += int(x0 <= x <= x1 and y0 <= y <= y1)
            total += 1
    return hits, total


def own_object_preferred(heatmap_pairs: Sequence[Tuple[np.ndarray, np.ndarray]],
                         box_pairs: Sequence[Sequence[Tuple[int, int, int, int]]]) -> int:
    """How many two-object images have both maps prefer their own object: each class's map has
    a higher mean inside its own object's box than inside the other's. A map that ignores the
    class (the same map for both) can never do so."""
    def mean_in(heatmap, box):
        x0, y0, x1, y1 = box
        return float(heatmap[y0:y1 + 1, x0:x1 + 1].mean())
    count = 0
    for (first, second), (a, b) in zip(heatmap_pairs, box_pairs):
        count += int(mean_in(first, a) > mean_in(first, b)
                     and mean_in(second, b) > mean_in(second, a))
    return count


def pair_heatmaps(explainer, pairs: HeldOut) -> List[Tuple[np.ndarray, np.ndarray]]:
    """Each two-object image's input-sized heatmaps for its two classes."""
    size = tuple(pairs.images.shape[-2:])
    out = []
    for image, classes in zip(pairs.images, pairs.box_classes):
        _, maps = explainer.explain(image[None].expand(2, *image.shape), classes[:2])
        heatmaps = to_heatmap(maps.detach().float(), size).cpu().numpy()
        out.append((heatmaps[0], heatmaps[1]))
    return out


def behaviour_rows(model: nn.Module, data: HeldOut, methods: Sequence[str],
                   pairs: Optional[HeldOut] = None, threshold: float = THRESHOLD,
                   seed: int = 0, batch_size: int = 64) -> List[Dict[str, object]]:
    """One row per method, then ``centre`` and ``random``: ``iou`` (mean IoU@threshold over the
    correctly classified images), ``box_acc`` (share of them with IoU >= 0.5), ``abpc``,
    ``pair_hits`` / ``pair_maps`` (two-object images, class-specific methods), ``seconds``."""
    from agcam.registry import get_explainer
    from models.vit import model_geometry

    geometry = model_geometry(model)
    size = geometry.input_size
    with torch.no_grad():
        predictions = torch.cat([model(data.images[s:s + 64]).argmax(1)
                                 for s in range(0, len(data.images), 64)])
    correct = (predictions == data.labels).numpy()
    kept_boxes = [b for b, ok in zip(data.boxes, correct) if ok]
    rows: List[Dict[str, object]] = []

    def row(name, ious, abpc, seconds, hits=None):
        rows.append({"method": name, "images": int(len(ious)), "iou": float(np.mean(ious)),
                     "box_acc": float(np.mean(np.asarray(ious) >= 0.5)), "abpc": abpc,
                     "pair_hits": None if hits is None else hits[0],
                     "pair_maps": None if hits is None else hits[1],
                     "pair_preferred": None if hits is None else hits[2],
                     "pair_images": None if hits is None else hits[3], "seconds": seconds})

    for name in methods:
        tick = time.perf_counter()
        explainer = get_explainer(name, model)
        predicted, maps = explain_all(explainer, data.images)
        heatmaps = to_heatmap(maps[correct], size).numpy()
        ious = box_ious(heatmaps, kept_boxes, threshold)
        _, label_maps = explain_all(explainer, data.images, data.labels)
        abpc = abpc_score(model, data, label_maps, batch_size)
        hits = None
        if pairs is not None and explainer.class_specific:
            heatmap_pairs = pair_heatmaps(explainer, pairs)
            hits = peak_hits(heatmap_pairs, pairs.boxes) + (
                own_object_preferred(heatmap_pairs, pairs.boxes), len(pairs.samples))
        row(name, ious, abpc, time.perf_counter() - tick, hits)

    tick = time.perf_counter()
    box = centred_box(kept_boxes, size)
    row(CENTRE, fixed_box_ious(box, kept_boxes, size),
        abpc_score(model, data, centre_maps(len(data.samples), geometry.grid), batch_size),
        time.perf_counter() - tick)
    tick = time.perf_counter()
    noise = random_maps(len(data.samples), geometry.grid, seed)
    ious = box_ious(to_heatmap(noise[correct], size).numpy(), kept_boxes, threshold)
    row(RANDOM, ious, abpc_score(model, data, noise, batch_size), time.perf_counter() - tick)
    return rows


def _correlations(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """Per image, the Pearson correlation of two ``[N, h, w]`` maps (NaN where one is constant)."""
    x = a.reshape(len(a), -1).double()
    y = b.reshape(len(b), -1).double()
    x = x - x.mean(dim=1, keepdim=True)
    y = y - y.mean(dim=1, keepdim=True)
    denominator = x.norm(dim=1) * y.norm(dim=1)
    out = (x * y).sum(dim=1) / denominator
    return torch.where(denominator > 0, out, torch.full_like(out, float("nan"))).numpy()


def precision_rows(model: nn.Module, data: HeldOut, methods: Sequence[str],
                   threshold: float = THRESHOLD) -> List[Dict[str, object]]:
    """Per method, how far its maps move from float32 (the predicted class's raw maps, every
    image): at ``bf16`` (CPU autocast) and in float64 (the model and images in double), the
    minimum and mean per-image correlation with the float32 map, the images whose prediction
    changed, and the mean IoU@``threshold`` of the correctly classified images at each."""
    import copy

    from agcam.registry import get_explainer, method_class
    from models.vit import model_geometry

    size = model_geometry(model).input_size
    model64 = copy.deepcopy(model).double()
    rows = []
    for name in methods:
        fp32_pred, fp32 = explain_all(get_explainer(name, model), data.images)
        row: Dict[str, object] = {"method": name}
        for key, explainer, images in (
                ("bf16", "bf16" in method_class(name).precisions and
                 get_explainer(name, model, precision="bf16"), data.images),
                ("fp64", get_explainer(name, model64), data.images.double())):
            if not explainer:
                row[key] = None
                continue
            pred, maps = explain_all(explainer, images)
            corr = _correlations(maps, fp32)
            correct = (pred == data.labels).numpy()
            boxes = [b for b, ok in zip(data.boxes, correct) if ok]
            ious = box_ious(to_heatmap(maps[correct].float(), size).numpy(), boxes, threshold)
            row[key] = {"corr_min": float(np.nanmin(corr)), "corr_mean": float(np.nanmean(corr)),
                        "constant": int(np.isnan(corr).sum()),
                        "changed": int((pred != fp32_pred).sum()), "iou": float(ious.mean())}
        correct = (fp32_pred == data.labels).numpy()
        boxes = [b for b, ok in zip(data.boxes, correct) if ok]
        row["fp32_iou"] = float(box_ious(to_heatmap(fp32[correct], size).numpy(), boxes,
                                         threshold).mean())
        rows.append(row)
    return rows


def precision_lines(rows: Sequence[Dict[str, object]], threshold: float = THRESHOLD
                    ) -> List[str]:
    from agcam.registry import method_label
    lines = [f"| method | bf16 vs fp32: correlation min (mean) | bf16: predictions changed | "
             f"IoU@{threshold:g} fp32 / bf16 | fp64 vs fp32: correlation min (mean) | "
             f"fp64: predictions changed |",
             "| --- | --- | ---: | --- | --- | ---: |"]

    def corr(entry):
        if entry is None:
            return "refused"
        note = f"; {entry['constant']} constant maps left out" if entry["constant"] else ""
        return f"{entry['corr_min']:.5f} ({entry['corr_mean']:.5f}){note}"

    for r in rows:
        bf16, fp64 = r["bf16"], r["fp64"]
        lines.append(f"| {method_label(r['method'])} | {corr(bf16)} | "
                     f"{'' if bf16 is None else bf16['changed']} | {r['fp32_iou']:.4f} / "
                     f"{'refused' if bf16 is None else format(bf16['iou'], '.4f')} | "
                     f"{corr(fp64)} | {fp64['changed']} |")
    return lines


def table_lines(rows: Sequence[Dict[str, object]], threshold: float = THRESHOLD) -> List[str]:
    """The rows as a Markdown table."""
    from agcam.registry import method_label
    lines = [f"| method | images | IoU@{threshold:g} | box acc (IoU >= 0.5) | ABPC | "
             "two objects: maps peaking in own box | two objects: images, both maps prefer own "
             "object |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        label = {CENTRE: "centred box / centre map (baseline)",
                 RANDOM: "random map (baseline)"}.get(r["method"], method_label(r["method"]))
        pairs = "" if r["pair_maps"] is None else f"{r['pair_hits']}/{r['pair_maps']}"
        preferred = "" if r["pair_images"] is None else \
            f"{r['pair_preferred']}/{r['pair_images']}"
        lines.append(f"| {label} | {r['images']} | {r['iou']:.4f} | {r['box_acc']:.4f} | "
                     f"{r['abpc']:.4f} | {pairs} | {preferred} |")
    return lines


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        "learnt behaviour", description="Localization (IoU at a threshold, box accuracy) and ABPC "
        "of every method and two baselines on the learnt model and the synthetic held-out set.")
    parser.add_argument("--method", nargs="+", default=["all"],
                        help="method names, or all (default: all)")
    parser.add_argument("--model", default="vit_agcam_learnt")
    parser.add_argument("--checkpoint", default=None,
                        help="weights (default: the committed ones)")
    parser.add_argument("--data_root", default=HELDOUT_ROOT,
                        help="held-out set, ILSVRC layout (default: samples/synthetic/ILSVRC)")
    parser.add_argument("--pairs_root", default=PAIRS_ROOT,
                        help="two-object images (default: samples/synthetic/pairs; '' for none)")
    parser.add_argument("--limit", type=int, default=None, help="first N images only")
    parser.add_argument("--threshold", type=float, default=THRESHOLD)
    parser.add_argument("--seed", type=int, default=0, help="seed of the random map")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--precision_table", action="store_true",
                        help="instead: how far each method's maps move at bf16 (CPU autocast) "
                             "and in float64 from float32")
    return parser


def main(args: argparse.Namespace) -> int:
    from agcam.errors import UsageError
    from agcam.registry import ordered_methods
    from models.vit import ModelError, create_model

    if args.threads:
        torch.set_num_threads(args.threads)
    methods = ordered_methods() if args.method == ["all"] else list(args.method)
    unknown = [m for m in methods if m not in ordered_methods()]
    if unknown:
        raise UsageError(f"--method {' '.join(unknown)}: unknown; choose from "
                         f"{', '.join(ordered_methods())} or all")
    try:
        model = create_model(args.model, checkpoint=args.checkpoint)
    except ModelError as exc:
        raise UsageError(str(exc)) from None
    data = load_heldout(model, args.data_root, args.limit)
    start = time.perf_counter()
    if args.precision_table:
        print(f"model {args.model}, held-out set {args.data_root}: {len(data.samples)} images")
        print("\n".join(precision_lines(precision_rows(model, data, methods, args.threshold),
                                         args.threshold)))
        print(f"({time.perf_counter() - start:.0f} s, torch threads {torch.get_num_threads()})")
        return 0
    pairs = load_heldout(model, args.pairs_root) if args.pairs_root else None
    rows = behaviour_rows(model, data, methods, pairs, args.threshold, args.seed)
    with torch.no_grad():
        accuracy = float((model(data.images).argmax(1) == data.labels).float().mean())
    count = 0 if pairs is None else len(pairs.samples)
    print(f"model {args.model}, held-out set {args.data_root}: {len(data.samples)} images, "
          f"accuracy {accuracy:.4f}; two-object images: {count}")
    print("\n".join(table_lines(rows, args.threshold)))
    print(f"({time.perf_counter() - start:.0f} s, torch threads {torch.get_num_threads()})")
    return 0


if __name__ == "__main__":
    from agcam.errors import UsageError
    try:
        sys.exit(main(get_args_parser().parse_args()))
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
