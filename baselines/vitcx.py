"""ViT-CX: Xie, Li, Zhang, Zhang & Zhang, "ViT-CX: Causal Explanation of Vision Transformers"
(IJCAI 2023), as the authors' code computes it (``vaynexie/CausalX-ViT``, ``ViT_CX/ViT_CX.py`` and
``ViT_CX/causal_score.py``).

1. Masks from patch embeddings: the output of the ``norm1`` of block ``target_layer`` (the
   authors' example: the last block), patch tokens only, ``C`` maps on the patch grid; each
   upsampled bilinearly to the input size (torchvision's ``Resize``), then min-max normalised
   over its pixels: ``C`` masks ``M_1..M_C``.
2. Clustering: agglomerative, complete linkage, on the cosine distance ``1 - cos(M_i, M_j)``
   (NaN similarities set to 0), merged below ``distance_threshold`` (0.1); each cluster's masks
   summed and min-max normalised again: ``K`` masks.
3. Causal score, with ``p`` the softmax probability of the explained class ``c``, ``x`` the
   (normalised) image and ``n_k ~ N(0, 0.1^2)`` per mask and pixel:

       s_k = p(x * M_k + n_k * (1 - M_k)) - p(x + n_k * (1 - M_k)) + p(x)
       map = (1/K) sum_k s_k * M_k / sum_j M_j           (pixel by pixel)

Maps at the input size (``resolution = "pixel"``). Seeded: every image draws its noise from
torch's generator seeded with ``seed`` (the authors' code draws ``torch.randn([K, 3, H, W]) * 0.1``
from the global generator; the same call here, inside a forked RNG state, so the caller's is
untouched), so a map depends on the image and the seed only, never on its batch neighbours.
The masked images go through the model ``batch_size`` at a time (the authors' ``gpu_batch``, 50);
that changes nothing but memory. Departure: a pixel where every cluster mask is 0 (possible with
a single cluster) gets 0 where the authors' division gives NaN.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from agcam.explainer import Explainer, class_scores
from agcam.precision import DEFAULT_PRECISION
from agcam.registry import register


def min_max_rows(masks: torch.Tensor) -> torch.Tensor:
    """Each row min-max normalised (the authors' ``norm_matrix``)."""
    low = masks.min(dim=1, keepdim=True).values
    high = masks.max(dim=1, keepdim=True).values
    return (masks - low) / (high - low)


def cosine_distance(masks: torch.Tensor) -> torch.Tensor:
    """``1 - cos`` between every pair of rows, NaN similarities set to 0."""
    norms = masks.norm(dim=1)
    similarity = (masks @ masks.t()) / (norms[:, None] * norms[None, :])
    return 1 - torch.nan_to_num(similarity, nan=0.0, posinf=0.0, neginf=0.0)


def cluster_masks(masks: torch.Tensor, distance_threshold: float) -> torch.Tensor:
    """``[C, P]`` masks -> ``[K, P]``: agglomerative clustering (complete linkage, precomputed
    cosine distance), each cluster's masks summed, then min-max normalised."""
    from sklearn.cluster import AgglomerativeClustering
    distance = cosine_distance(masks).detach().cpu().double().numpy()
    if len(masks) == 1:
        labels = np.zeros(1, dtype=np.int64)
    else:
        labels = AgglomerativeClustering(n_clusters=None, distance_threshold=distance_threshold,
                                         metric="precomputed", linkage="complete"
                                         ).fit(distance).labels_
    index = torch.as_tensor(labels, device=masks.device)
    clustered = torch.zeros(int(labels.max()) + 1, masks.shape[1], dtype=masks.dtype,
                            device=masks.device).index_add_(0, index, masks)
    return min_max_rows(clustered)


def causal_map(probability, image: torch.Tensor, masks: torch.Tensor, target: int,
               class_p: torch.Tensor, noise: torch.Tensor, batch_size: int) -> torch.Tensor:
    """The causal score map ``[H, W]`` of one image (``[3, H, W]``) from its ``[K, H, W]`` masks
    and ``[K, 3, H, W]`` noise; ``probability(images) -> [n, classes]``."""
    K = masks.shape[0]
    m = masks[:, None]
    masked = image * m + noise * (1 - m)
    noisy = image + noise * (1 - m)
    stacked = torch.cat([masked, noisy])
    p = torch.cat([probability(stacked[i:i + batch_size])[:, target]
                   for i in range(0, 2 * K, batch_size)])
    scores = p[:K] - p[K:] + class_p                                       # [K]
    total = masks.sum(dim=0)
    shares = torch.where(total > 0, masks / torch.where(total > 0, total, 1), 0)
    return torch.einsum("k,khw->hw", scores, shares) / K


@register("vitcx", label="ViT-CX")
class ViTCX(Explainer):
    """ViT-CX: masks from clustered patch embeddings, scored by their causal impact."""

    resolution = "pixel"
    needs_class_token = False   # patch embeddings and the model's scores of masked inputs

    def __init__(self, model: nn.Module, precision: str = DEFAULT_PRECISION,
                 distance_threshold: float = 0.1, target_layer: int = -1, seed: int = 0,
                 noise: float = 0.1, batch_size: int = 50):
        """``distance_threshold``: the clustering's cosine distance (0.1); ``target_layer``: the
        block whose ``norm1`` output gives the masks (-1: the last); ``seed`` of the noise;
        ``noise``: its standard deviation (0.1); ``batch_size``: masked images per pass."""
        super().__init__(model, precision)
        depth = len(self.model.blocks)
        if not -depth <= int(target_layer) < depth:
            raise ValueError(f"vitcx: target_layer must be a block index in [-{depth}, {depth}), "
                             f"got {target_layer}")
        if not 0 < float(distance_threshold):
            raise ValueError(f"vitcx: distance_threshold must be > 0, got {distance_threshold}")
        self.distance_threshold = float(distance_threshold)
        self.target_layer = int(target_layer) % depth
        self.seed = int(seed)
        self.noise = float(noise)
        self.batch_size = int(batch_size)

    def masks(self, images: torch.Tensor) -> torch.Tensor:
        """``(masks, logits)``: the ``[B, C, H*W]`` embedding masks of a batch (step 1) and the
        model's logits."""
        features = {}
        norm1 = self.model.blocks[self.target_layer].norm1
        handle = norm1.register_forward_hook(lambda m, a, out: features.update(out=out))
        try:
            logits = self.model(images)
        finally:
            handle.remove()
        tokens = features["out"][:, self.patch_columns()]                   # [B, P, C]
        B, _, C = tokens.shape
        grid = tokens.transpose(1, 2).reshape(B, C, *self.geometry.grid)
        size = tuple(self.geometry.input_size)
        upsampled = F.interpolate(grid, size=size, mode="bilinear", align_corners=False)
        masks = min_max_rows(upsampled.reshape(B * C, -1)).reshape(B, C, -1)
        return masks, logits

    def _explain(self, images, targets):
        with torch.no_grad():
            masks, logits = self.masks(images)
            predictions, classes, _ = class_scores(logits, targets)
            probabilities = logits.softmax(dim=1)

            def probability(x):
                return self.model(x).softmax(dim=1)

            H, W = self.geometry.input_size
            maps = []
            for i, image in enumerate(images):
                target = int(classes[i])
                clustered = cluster_masks(masks[i], self.distance_threshold).reshape(-1, H, W)
                with torch.random.fork_rng(devices=[]):      # drawn on the CPU, as theirs
                    torch.manual_seed(self.seed)
                    noise = torch.randn([clustered.shape[0], 3, H, W], dtype=image.dtype)
                noise = noise.to(image.device) * self.noise
                maps.append(causal_map(probability, image, clustered, target,
                                       probabilities[i, target], noise, self.batch_size))
        return predictions, torch.stack(maps)

