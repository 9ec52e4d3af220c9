"""SaCo, the Salience-guided Faithfulness Coefficient (Wu, Kang, Tang, Hong & Yan, "On the
Faithfulness of Vision Transformer Explanations", CVPR 2024; adreamwu/SaCo). Higher is better,
in [-1, 1].

For each image, the map of its predicted class ``y`` made a heatmap (the localization recipe:
bilinear to the input size, min-max; SaCo is unchanged by a positive affine map of the salience,
the groups being of equal size), its pixels ranked by salience (descending, ties in row-major
order) and cut into ``K`` groups of equal size ``G_1..G_K`` (``saco_groups``, default 10, the
paper's; sizes differ by one pixel where ``K`` does not divide the pixel count):

    s(G_i)          = sum of the salience in G_i
    pred(x, G_i)    = p(y | x) - p(y | x with G_i perturbed)        (softmax probability)
    F = sum_{i<j} w_ij / sum_{i<j} |w_ij|,
        w_ij = s(G_i) - s(G_j) if pred(x, G_i) >= pred(x, G_j) else -(s(G_i) - s(G_j))

The aggregation is the released ``compute_SaCo`` (its loop; ``tests/test_saco.py`` checks it
against the released function's output). The released code leaves the grouping and the
perturbation as placeholders; here a group is perturbed by setting its pixels, all channels, to
``saco_baseline`` in normalised space (default 0: the data set's mean colour), a stated
convention: the paper's text could not be reached from the machine this was written on. An image
whose weights are all zero (a constant map) has no coefficient (the released code raises); it is
counted apart (``undefined``).
"""
from __future__ import annotations

from typing import Any, Dict, List, Sequence

import numpy as np

from agcam.evaluation.base import Column, EvalBatch, Evaluation, Needs, register_evaluation

#: the paper's number of groups
GROUPS = 10


def saco_coefficient(salience: Sequence[float], drops: Sequence[float]) -> float:
    """The released aggregation: ``F`` from the groups' saliences ``s(G_i)`` and prediction drops
    ``pred(x, G_i)`` (NaN where every weight is zero)."""
    s = np.asarray(salience, dtype=np.float64)
    d = np.asarray(drops, dtype=np.float64)
    i, j = np.triu_indices(len(s), k=1)
    weights = np.where(d[i] >= d[j], s[i] - s[j], -(s[i] - s[j]))
    total = np.abs(weights).sum()
    return float(weights.sum() / total) if total != 0 else float("nan")


def salience_groups(heatmap, groups: int):
    """Pixel indices (flattened) of each group, by decreasing salience, equal sizes."""
    import torch
    order = torch.argsort(heatmap.reshape(-1), descending=True, stable=True)
    return list(torch.tensor_split(order, groups))


@register_evaluation
class SaCo(Evaluation):
    """SaCo (see the module docstring). Options ``saco_groups`` (K, 10), ``saco_baseline``
    (the perturbation value in normalised space, 0.0)."""

    name = "saco"
    label = "SaCo"
    needs = Needs(target="predicted", rescoring=True)
    columns = (Column("saco", "SaCo"),)

    def __init__(self, saco_groups: int = GROUPS, saco_baseline: float = 0.0, **options):
        super().__init__(**options)
        self.groups = int(saco_groups)
        if self.groups < 2:
            raise ValueError(f"saco_groups must be at least 2, got {saco_groups}")
        self.baseline = float(saco_baseline)

    def describe(self) -> str:
        return (f"every image, map of the predicted class, bilinear + min-max; K = {self.groups} "
                "equal groups by decreasing salience, each set to "
                f"{self.baseline:g} (normalised input); softmax probability drops; released "
                "pairwise aggregation")

    def score(self, batch: EvalBatch) -> List[Dict[str, Any]]:
        import torch

        from agcam.maps import to_heatmap
        from agcam.precision import precision as precision_context

        size = tuple(batch.geometry.input_size)
        heatmaps = to_heatmap(batch.maps, size).detach().double()
        device = batch.inputs.device
        records = []
        for k in range(len(batch.indices)):
            image, target = batch.inputs[k], int(batch.predictions[k])
            perturbed = image.unsqueeze(0).repeat(self.groups + 1, 1, 1, 1)
            salience = []
            for g, pixels in enumerate(salience_groups(heatmaps[k], self.groups)):
                flat = perturbed[g + 1].reshape(image.shape[0], -1)
                flat[:, pixels.to(device)] = self.baseline
                salience.append(float(heatmaps[k].reshape(-1)[pixels].sum()))
            with torch.no_grad(), precision_context(batch.precision, device.type):
                probabilities = batch.model(perturbed).double().softmax(dim=1)[:, target]
            drops = (probabilities[0] - probabilities[1:]).cpu().tolist()
            records.append({"saco": saco_coefficient(salience, drops)})
        return records

    def summarize(self, records, context) -> Dict[str, Any]:
        values = np.array([r["saco"] for r in records], dtype=np.float64)
        defined = values[~np.isnan(values)]
        return {"num_images": len(records), "undefined": int(np.isnan(values).sum()),
                "saco": float(defined.mean()) if len(defined) else float("nan")}
