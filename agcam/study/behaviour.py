"""What the methods do on the learnt model, beyond the runner's table: the functions of
``tests/test_learnt_model.py`` and ``agcam study``.

- localization, the released procedure (:func:`agcam.evaluation.localization.localize_batch`):
  :func:`box_ious` per image; :func:`centred_box` / :func:`fixed_box_ious`, a centred box of the
  set's mean box size (a floor that knows the boxes' size, stronger than ``centre``);
- ABPC, the released procedure (:func:`agcam.evaluation.abpc.abpc_curves`): :func:`abpc_score`;
- two-object images (``samples/synthetic/pairs``): each class-specific method's map for each of
  the two classes; :func:`peak_hits` counts the maps whose maximum lies in that class's own box
  (a map that ignores the class can hit at most one of an image's two), and
  :func:`own_object_preferred` the images where both maps have a higher mean inside their own
  object's box than inside the other's (such a map never can); :func:`pair_rows` per method;
- :func:`precision_rows`: how far each method's maps move at bf16 and in float64 from float32.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from agcam.maps import to_heatmap
from agcam.study.heldout import THRESHOLD, HeldOut


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
    count = 0
    for (first, second), (a, b) in zip(heatmap_pairs, box_pairs):
        count += int(box_mean(first, a) > box_mean(first, b)
                     and box_mean(second, b) > box_mean(second, a))
    return count


def box_mean(heatmap: np.ndarray, box: Tuple[int, int, int, int]) -> float:
    """The heatmap's mean inside ``box`` (inclusive pixel corners)."""
    x0, y0, x1, y1 = box
    return float(heatmap[y0:y1 + 1, x0:x1 + 1].mean())


def pair_heatmaps(explainer, pairs: HeldOut) -> List[Tuple[np.ndarray, np.ndarray]]:
    """Each two-object image's input-sized heatmaps for its two classes."""
    size = tuple(pairs.images.shape[-2:])
    out = []
    for image, classes in zip(pairs.images, pairs.box_classes):
        _, maps = explainer.explain(image[None].expand(2, *image.shape), classes[:2])
        heatmaps = to_heatmap(maps.detach().float(), size).cpu().numpy()
        out.append((heatmaps[0], heatmaps[1]))
    return out


def pair_rows(model: nn.Module, pairs: HeldOut, methods: Sequence[str]
              ) -> List[Dict[str, object]]:
    """Per class-specific method of ``methods``: ``hits``/``maps`` (:func:`peak_hits`) and
    ``preferred``/``images`` (:func:`own_object_preferred`) on the two-object images."""
    from agcam.registry import get_explainer
    rows = []
    for name in methods:
        explainer = get_explainer(name, model)
        if not explainer.class_specific:
            continue
        heatmaps = pair_heatmaps(explainer, pairs)
        hits, total = peak_hits(heatmaps, pairs.boxes)
        rows.append({"method": name, "hits": hits, "maps": total,
                     "preferred": own_object_preferred(heatmaps, pairs.boxes),
                     "images": len(pairs.samples)})
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
