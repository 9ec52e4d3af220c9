"""The one perturbation engine: ABPC, Chefer's perturbation test and RISE's insertion/deletion are
settings of it.

A test (:class:`PerturbationTest`) changes the pixels of an image in the order its heatmap gives
and scores the model on every step's image:

- **ranking** (:class:`Ranking`): which ``k`` pixels of the ``H x W`` heatmap step ``k`` changes,
  with a stated tie rule;
- **order**: most relevant first (``most_relevant=True``) or least relevant first;
- **steps** (:class:`Steps`): pixel counts ``k``, from fractions ``int(H * W * f)`` or every
  ``stride`` pixels up to all of them;
- **start and finish images**: the image itself (``None``) or a substrate (:class:`Substrate`):
  a constant in normalised space, a constant in [0, 1] space, or a function of the image such as
  RISE's blur. The image of step ``k`` is the start image with its ``k`` ranked pixels taken from
  the finish image, in every channel: ``where(mask_k, finish, start)``, each step from a clean
  copy;
- **score**: the softmax probability of the class (``"probability"``) or whether the top-1 class
  is the label (``"top1"``); the class is the label (``target="label"``) or the model's top-1 on
  the clean image (``target="predicted"``).

:func:`perturbation_curves` runs any number of tests at once, batched across steps, tests and
images through one :class:`ForwardQueue`. Images shared by several tests or steps go through the
model once: the clean image once per image, the all-substrate image once per image (a function of
the image) or once per run (a constant).

Provenance of the settings (docs/faithfulness.md): ABPC, the paper's faithfulness evaluation
(:mod:`agcam.evaluation.abpc`); Chefer et al. (CVPR 2021),
``baselines/ViT/pertubation_eval_from_hdf5.py`` of hila-chefer/Transformer-Explainability;
Petsiuk et al. (BMVC 2018), ``evaluation.py`` (``CausalMetric``, ``gkern``, ``auc``) of
eclique/RISE.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, Hashable, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from agcam.evaluation.names import CHEFER_AUC
from agcam.precision import precision as precision_context
from models.inference import class_token_logits

SCORES = ("probability", "top1")
TARGETS = ("label", "predicted")
RULES = ("topk", "sort")


# --------------------------------------------------------------------------------- ranking

@dataclass(frozen=True)
class Ranking:
    """Which ``k`` pixels a step changes, and how ties are broken.

    ``rule="topk"``: each step's set is ``torch.topk(h + offset, k, largest=most_relevant)`` of
    the flattened heatmap in float32 on the CPU, one call per step, so the sets of two steps are
    not always nested where values tie; ties are broken by the CPU ``topk`` kernel. ABPC's
    released ranking is ``offset=1`` (:mod:`agcam.evaluation.abpc`: values closer than 2^-23
    tie); Chefer's script calls ``topk`` per step too, on the raw heatmap (``offset=0``) and on
    its negation for the negative test, on the GPU, whose tie order is its own.

    ``rule="sort"``: one order per image, a stable sort of the heatmap (descending for most
    relevant first, ascending for least), ties in increasing row-major pixel index; step ``k``
    takes the first ``k``, so the sets are nested. RISE takes
    ``np.flip(np.argsort(h))``, whose tie order is that of NumPy's unstable quicksort, reversed.
    """

    rule: str = "sort"
    offset: float = 0.0

    def __post_init__(self):
        if self.rule not in RULES:
            raise ValueError(f"ranking rule must be one of {RULES}, got {self.rule!r}")

    def masks(self, heatmaps: torch.Tensor, most_relevant: bool) -> "StepMasks":
        """The masks of ``[B, H, W]`` (or ``[B, H*W]``) heatmaps, step by step."""
        return StepMasks(self, heatmaps, most_relevant)


class StepMasks:
    """``mask(k)``: ``[B, H*W]`` bool, the ``k`` pixels of each heatmap a step changes."""

    def __init__(self, ranking: Ranking, heatmaps: torch.Tensor, most_relevant: bool):
        self.ranking = ranking
        self.most_relevant = most_relevant
        flat = heatmaps.reshape(heatmaps.shape[0], -1).detach().cpu()
        self.batch, self.num_pixels = flat.shape
        if ranking.rule == "topk":
            self.keys = flat.to(torch.float32) + ranking.offset
            self.order = None
        else:
            keys = flat if flat.is_floating_point() else flat.double()
            self.order = torch.sort(keys + ranking.offset, dim=1, descending=most_relevant,
                                    stable=True).indices

    def mask(self, k: int) -> torch.Tensor:
        mask = torch.zeros(self.batch, self.num_pixels, dtype=torch.bool)
        if k <= 0:
            return mask
        if k >= self.num_pixels:
            return mask.fill_(True)
        if self.order is None:
            indices = torch.topk(self.keys, k, dim=1, largest=self.most_relevant,
                                 sorted=False).indices
        else:
            indices = self.order[:, :k]
        return mask.scatter_(1, indices, True)


# ----------------------------------------------------------------------------------- steps

@dataclass(frozen=True)
class Steps:
    """The pixel counts of a curve's steps.

    ``fractions``: ``k = int(H * W * f)`` for each ``f`` (ABPC 0, 0.1, ..., 1; Chefer 0.1 ... 0.9;
    ``int`` truncates, as both scripts do). ``stride``: ``k = min(i * stride, H * W)`` for
    ``i = 0 .. ceil(H * W / stride)``, RISE's ``n_steps + 1`` points from nothing to everything
    changed.
    """

    fractions: Optional[Tuple[float, ...]] = None
    stride: Optional[int] = None

    def __post_init__(self):
        if (self.fractions is None) == (self.stride is None):
            raise ValueError("Steps needs fractions or stride, not both")
        if self.stride is not None and self.stride < 1:
            raise ValueError(f"stride must be at least 1, got {self.stride}")

    def counts(self, num_pixels: int) -> List[int]:
        if self.fractions is not None:
            return [int(num_pixels * f) for f in self.fractions]
        n_steps = -(-num_pixels // self.stride)
        return [min(i * self.stride, num_pixels) for i in range(n_steps + 1)]

    def positions(self, num_pixels: int) -> List[float]:
        """The x of each step: its fraction, or ``k / (H * W)``."""
        if self.fractions is not None:
            return [float(f) for f in self.fractions]
        return [k / num_pixels for k in self.counts(num_pixels)]


# ------------------------------------------------------------------------------- substrates

class Substrate:
    """What changed pixels become. ``image(images)`` is ``[1, C, 1, 1]`` (a constant, the same
    for every image) or ``[B, C, H, W]``; ``key`` identifies it, so that tests sharing a
    substrate share its forward passes."""

    constant: bool = False

    @property
    def key(self) -> Hashable:
        raise NotImplementedError

    def image(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


@dataclass(frozen=True)
class NormalizedConstant(Substrate):
    """``value`` in normalised space in every channel (ABPC and RISE's deletion: 0)."""

    value: float = 0.0
    constant = True

    @property
    def key(self):
        return ("normalized", float(self.value))

    def image(self, images):
        return torch.full((1, images.shape[1], 1, 1), float(self.value), dtype=images.dtype,
                          device=images.device)


@dataclass(frozen=True)
class UnitConstant(Substrate):
    """``value`` in [0, 1] space in every channel, then normalised: ``(value - mean) / std``
    (Chefer's test: 0, black)."""

    mean: Tuple[float, ...]
    std: Tuple[float, ...]
    value: float = 0.0
    constant = True

    @property
    def key(self):
        return ("unit", float(self.value), tuple(self.mean), tuple(self.std))

    def image(self, images):
        channels = images.shape[1]
        options = {"dtype": images.dtype, "device": images.device}
        out = torch.full((channels,), float(self.value), **options)
        out = (out - torch.tensor(self.mean, **options)) / torch.tensor(self.std, **options)
        return out.view(1, channels, 1, 1)


def gkern(klen: int = 11, nsig: float = 5.0) -> np.ndarray:
    """RISE's blur kernel: ``scipy.ndimage.gaussian_filter`` (``mode="reflect"``, its default
    truncation) of a ``klen x klen`` unit impulse at the centre, ``sigma = nsig``; float32.

    With ``klen=11, nsig=5`` the reflections fold almost all of a wide Gaussian back into the
    window: nearly a box filter (centre and corner differ by 12%), summing to 1."""
    from scipy.ndimage import gaussian_filter
    impulse = np.zeros((klen, klen))
    impulse[klen // 2, klen // 2] = 1.0
    return gaussian_filter(impulse, nsig, mode="reflect").astype(np.float32)


@dataclass(frozen=True)
class Blur(Substrate):
    """The image convolved with :func:`gkern` in each channel, zero padding ``klen // 2``, on the
    normalised image (RISE's insertion substrate)."""

    klen: int = 11
    nsig: float = 5.0
    constant = False

    @property
    def key(self):
        return ("blur", int(self.klen), float(self.nsig))

    def image(self, images):
        channels = images.shape[1]
        kernel = torch.from_numpy(gkern(self.klen, self.nsig)).to(images.device, images.dtype)
        weight = kernel.expand(channels, 1, self.klen, self.klen)
        return F.conv2d(images, weight, padding=self.klen // 2, groups=channels)


@dataclass(frozen=True)
class FunctionSubstrate(Substrate):
    """Any function of the ``[B, C, H, W]`` images (``name`` is its key)."""

    name: str
    fn: Callable[[torch.Tensor], torch.Tensor] = field(compare=False)
    constant = False

    @property
    def key(self):
        return ("function", self.name)

    def image(self, images):
        return self.fn(images)


# ------------------------------------------------------------------------------------ tests

@dataclass(frozen=True)
class PerturbationTest:
    """One curve: see the module docstring. ``start``/``finish`` ``None`` is the image itself."""

    name: str
    steps: Steps
    most_relevant: bool = True
    ranking: Ranking = Ranking()
    start: Optional[Substrate] = None
    finish: Optional[Substrate] = NormalizedConstant(0.0)
    score: str = "probability"
    target: str = "label"

    def __post_init__(self):
        if self.score not in SCORES:
            raise ValueError(f"score must be one of {SCORES}, got {self.score!r}")
        if self.target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}, got {self.target!r}")
        if self.start is None and self.finish is None:
            raise ValueError(f"{self.name}: start and finish are both the image")


# ---------------------------------------------------------------------------- forward queue

class ForwardQueue:
    """Collects images and runs the model on them ``batch_size`` at a time, in the order added.

    ``add(images, tags)`` queues ``[b, C, H, W]`` images with one tag each; every forward pass
    calls ``on_result(tags, probabilities, top1)``: the softmax ``[n, classes]`` (float32, float64
    for a float64 model) and the
    argmax of the logits ``[n]``, both on the CPU. ``forward_passes`` counts the images run.
    The last block is computed for the class token only (:func:`class_token_logits`).
    """

    def __init__(self, model: nn.Module, batch_size: int,
                 on_result: Callable[[list, torch.Tensor, torch.Tensor], None],
                 precision: str = "fp32"):
        self.model = model
        self.batch_size = max(1, int(batch_size))
        self.on_result = on_result
        self.precision = precision
        self.images: List[torch.Tensor] = []
        self.tags: list = []
        self.pending = 0
        self.forward_passes = 0

    def add(self, images: torch.Tensor, tags: Sequence) -> None:
        if images.shape[0] != len(tags):
            raise ValueError(f"{images.shape[0]} images, {len(tags)} tags")
        self.images.append(images)
        self.tags.extend(tags)
        self.pending += images.shape[0]
        while self.pending >= self.batch_size:
            self._run(self.batch_size)

    def flush(self) -> None:
        while self.pending:
            self._run(min(self.pending, self.batch_size))

    def forward(self, images: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(probabilities, top1)`` of ``images`` now, outside the queue (counted)."""
        with torch.inference_mode(), precision_context(self.precision, images.device.type):
            logits = class_token_logits(self.model, images)
            if logits.dtype != torch.float64:     # float64 stays, for exactness tests
                logits = logits.float()
            probs = logits.softmax(dim=1)
        self.forward_passes += images.shape[0]
        return probs.cpu(), logits.argmax(dim=1).cpu()

    def _run(self, count: int) -> None:
        images = torch.cat(self.images) if len(self.images) > 1 else self.images[0]
        probs, top1 = self.forward(images[:count])
        tags, self.tags = self.tags[:count], self.tags[count:]
        rest = images.shape[0] - count
        self.images = [images[count:]] if rest else []
        self.pending = rest
        self.on_result(tags, probs, top1)


# ---------------------------------------------------------------------------------- results

@dataclass
class CurveResults:
    """Per-image curves of every test: ``curves[name]`` is ``[n, len(steps)]`` float64.

    ``predictions`` and ``clean_correct`` (top-1 on the clean image, and whether it is the label)
    are filled when the run made a clean forward pass (``-1`` otherwise)."""

    tests: List[PerturbationTest]
    names: List[str]
    labels: List[int]
    curves: Dict[str, np.ndarray]
    positions: Dict[str, List[float]]
    counts: Dict[str, List[int]]
    predictions: List[int] = field(default_factory=list)
    clean_correct: List[int] = field(default_factory=list)
    forward_passes: int = 0
    indices: List[int] = field(default_factory=list)

    @property
    def num_images(self) -> int:
        return len(self.names)

    def __getattr__(self, name: str):
        """A test's ``[n, steps]`` curves by its name (``results.lerf``, ``results.deletion``)."""
        curves = self.__dict__.get("curves")
        if curves is not None and name in curves:
            return curves[name]
        raise AttributeError(f"{type(self).__name__} has no attribute or test {name!r}")


def _score(kind: str, probs_row: torch.Tensor, top1: int, cls: int, label: int) -> float:
    if kind == "probability":
        return float(probs_row[cls])
    return float(top1 == label)


def perturbation_curves(model: nn.Module, batches: Iterable, tests: Sequence[PerturbationTest],
                        batch_size: int = 64, precision: str = "fp32",
                        clean_forward: Optional[bool] = None, progress: bool = False,
                        total: Optional[int] = None, desc: str = "perturbation"
                        ) -> CurveResults:
    """The curves of every test in ``tests`` for every image in ``batches``.

    ``batches`` yields objects with ``names``, ``labels`` ``[B]``, ``images`` ``[B, C, H, W]``
    (normalised model input), ``heatmaps`` ``[B, H, W]`` and optionally ``indices`` (e.g.
    :meth:`agcam.store.StoreReader.batches`). ``batch_size``: images per forward pass, mixed
    across steps, tests and images; ``precision``: that of the forward passes.

    ``clean_forward`` (default: when a test scores the predicted class or top-1 correctness)
    runs the clean images first, outside the queue, and records the predictions; otherwise each
    clean image goes through the queue with the first step that needs it. Images are queued
    step by step, and within a step test by test, in the order of ``tests``. A batch with
    ``predictions`` (the run's one prediction per image) scores those as the predicted class.
    The same as feeding the batches one by one to a :class:`CurveRun` (the runner's way).
    """
    curve_run = CurveRun(model, tests, batch_size, precision, clean_forward)
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=total, unit="img", desc=desc)
    try:
        for batch in batches:
            curve_run.add(batch)
            if bar is not None:
                bar.update(len(batch.names))
    finally:
        if bar is not None:
            bar.close()
    return curve_run.finish()


class CurveRun:
    """:func:`perturbation_curves` fed one batch at a time: ``add(batch)`` queues a batch's
    step images (the forward passes run as the queue fills, across batches), ``finish()``
    flushes the queue and returns the :class:`CurveResults`. The model is in eval mode from
    the first ``add`` to ``finish`` and put back as it was."""

    def __init__(self, model: nn.Module, tests: Sequence[PerturbationTest],
                 batch_size: int = 64, precision: str = "fp32",
                 clean_forward: Optional[bool] = None):
        tests = list(tests)
        if not tests:
            raise ValueError("no test to run")
        if len({t.name for t in tests}) != len(tests):
            raise ValueError("tests need distinct names")
        if clean_forward is None:
            clean_forward = any(t.target == "predicted" or t.score == "top1" for t in tests)
        if not clean_forward and any(t.target == "predicted" for t in tests):
            raise ValueError("the predicted class needs the clean forward pass")
        self.model, self.tests, self.clean_forward = model, tests, clean_forward
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        self.was_training: Optional[bool] = None
        self.rows_out: Dict[str, Dict[int, np.ndarray]] = {t.name: {} for t in tests}
        self.names: List[str] = []
        self.labels: List[int] = []
        self.indices: List[int] = []
        self.predictions: List[int] = []
        self.clean_correct: List[int] = []
        self.classes: Dict[Tuple[int, str], int] = {}       # (row, target) -> class scored
        self.test_index = {t.name: t for t in tests}
        self.queue = ForwardQueue(model, batch_size, self._record, precision)
        self.constants: Dict[Hashable, Tuple[torch.Tensor, int]] = {}
        self.counts_of: Dict[str, List[int]] = {}
        self.positions_of: Dict[str, List[float]] = {}

    def _record(self, tags, probs, top1):
        top1 = top1.tolist()
        for j, destinations in enumerate(tags):
            for row, name, step in destinations:
                test = self.test_index[name]
                self.rows_out[name][row][step] = _score(
                    test.score, probs[j], top1[j], self.classes[row, test.target],
                    self.labels[row])

    def add(self, batch) -> None:
        if self.was_training is None:
            self.was_training = self.model.training
            self.model.eval()
        images = batch.images.to(device=self.device, dtype=self.dtype)
        count, _, height, width = images.shape
        num_pixels = height * width
        heatmaps = batch.heatmaps.reshape(count, -1)
        if heatmaps.shape[1] != num_pixels:
            raise ValueError(f"heatmaps {tuple(batch.heatmaps.shape[1:])} do not match the "
                             f"images {(height, width)}")
        batch_labels = [int(v) for v in torch.as_tensor(batch.labels).reshape(-1)]
        rows = list(range(len(self.names), len(self.names) + count))
        self.names.extend(batch.names)
        self.labels.extend(batch_labels)
        self.indices.extend(getattr(batch, "indices", rows))
        for test in self.tests:
            counts = test.steps.counts(num_pixels)
            if self.counts_of.setdefault(test.name, counts) != counts:
                raise ValueError("images of different sizes in one run")
            self.positions_of.setdefault(test.name, test.steps.positions(num_pixels))
            for row in rows:
                self.rows_out[test.name][row] = np.full(len(counts), np.nan)
        for row, label in zip(rows, batch_labels):
            self.classes[row, "label"] = label
        if self.clean_forward:
            probs, top1 = _chunked_forward(self.queue, images)
            top1 = top1.tolist()
            # the caller's one prediction per image (agcam.evaluation.run), else this
            # forward pass's
            given = getattr(batch, "predictions", None)
            chosen = top1 if given is None else [int(v) for v in given]
            for j, row in enumerate(rows):
                self.classes[row, "predicted"] = chosen[j]
            self.predictions.extend(top1)
            self.clean_correct.extend(int(p == lab) for p, lab in zip(top1, batch_labels))
            clean = (probs, top1)
        else:
            self.predictions.extend([-1] * count)
            self.clean_correct.extend([-1] * count)
            clean = None
        _queue_batch(self.queue, self.tests, images, heatmaps, rows, clean, self.constants,
                     self.counts_of, self._record)

    def finish(self) -> CurveResults:
        try:
            self.queue.flush()
        finally:
            if self.was_training is not None:
                self.model.train(self.was_training)
        names = self.names
        curves = {t.name: (np.stack([self.rows_out[t.name][r] for r in range(len(names))])
                           if names else np.zeros((0, len(self.counts_of.get(t.name, [])))))
                  for t in self.tests}
        return CurveResults(tests=self.tests, names=names, labels=self.labels, curves=curves,
                            positions=self.positions_of, counts=self.counts_of,
                            predictions=self.predictions, clean_correct=self.clean_correct,
                            forward_passes=self.queue.forward_passes,
                            indices=list(self.indices))


def _chunked_forward(queue: ForwardQueue, images: torch.Tensor
                     ) -> Tuple[torch.Tensor, torch.Tensor]:
    parts = [queue.forward(images[i:i + queue.batch_size])
             for i in range(0, images.shape[0], queue.batch_size)]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def _queue_batch(queue: ForwardQueue, tests: List[PerturbationTest], images: torch.Tensor,
                 heatmaps: torch.Tensor, rows: List[int], clean, constants, counts_of,
                 record) -> None:
    """Queue every step image of one batch of images. An image that is the clean image, a whole
    substrate image or a constant is queued (or scored) once, with every (test, step) that
    shows it; the others are queued as they come, step-major, then in test order."""
    count, channels, height, width = images.shape
    num_pixels = height * width
    substrates: Dict[Hashable, torch.Tensor] = {}

    def substrate_image(sub: Optional[Substrate]) -> torch.Tensor:
        if sub is None:
            return images
        if sub.key not in substrates:
            substrates[sub.key] = sub.image(images)
        return substrates[sub.key]

    def source(test, k):
        """What the step image is when it is a whole image: ("image",), ("constant", sub),
        ("substrate", sub); ``None`` for a mix."""
        whole = test.start if k <= 0 else test.finish if k >= num_pixels else False
        if whole is False:
            return None
        if whole is None:
            return ("image", None)
        return ("constant" if whole.constant else "substrate", whole)

    # every (step, test) whose image is a whole one, grouped by what it is
    shared: Dict[Hashable, List[Tuple[str, int]]] = {}
    length = max(len(counts_of[t.name]) for t in tests)
    for step in range(length):
        for test in tests:
            counts = counts_of[test.name]
            if step < len(counts):
                what = source(test, counts[step])
                if what is not None:
                    key = (what[0], None if what[1] is None else what[1].key)
                    shared.setdefault(key, []).append((test.name, step))
    done = set()
    masks = {t.name: t.ranking.masks(heatmaps, t.most_relevant)
             for t in tests}
    for step in range(length):
        for test in tests:
            counts = counts_of[test.name]
            if step >= len(counts):
                continue
            k = counts[step]
            what = source(test, k)
            if what is None:
                start, finish = substrate_image(test.start), substrate_image(test.finish)
                mask = masks[test.name].mask(k).to(images.device)
                stepped = torch.where(mask.view(count, 1, height, width), finish, start)
                queue.add(stepped, [[(row, test.name, step)] for row in rows])
                continue
            key = (what[0], None if what[1] is None else what[1].key)
            if key in done:
                continue
            done.add(key)
            destinations = shared[key]
            if what[0] == "image" and clean is not None:
                probs, top1 = clean
                record([[(row, name, s) for name, s in destinations] for row in rows],
                       probs, torch.as_tensor(top1))
            elif what[0] == "constant":
                sub = what[1]
                if sub.key not in constants:
                    # the same image for every image of the run: one forward pass in all
                    whole = sub.image(images).expand(1, channels, height, width).contiguous()
                    constants[sub.key] = queue.forward(whole)
                probs, top1 = constants[sub.key]
                record([[(row, name, s) for name, s in destinations] for row in rows],
                       probs.expand(count, -1), top1.expand(count))
            else:
                queue.add(images if what[0] == "image" else substrate_image(what[1]),
                          [[(row, name, s) for name, s in destinations] for row in rows])


# ------------------------------------------------------------------------------ AUC helpers

def rise_auc(curve: Sequence[float]) -> float:
    """RISE's ``auc``: ``(sum(a) - a[0] / 2 - a[-1] / 2) / (len(a) - 1)``, the trapezoid rule on
    equally spaced steps over [0, 1]."""
    a = np.asarray(curve, dtype=np.float64)
    if a.size < 2:
        raise ValueError("an AUC needs at least two points")
    return float((a.sum() - a[0] / 2 - a[-1] / 2) / (a.size - 1))


def chefer_auc(curve: Sequence[float], steps: Sequence[float], clean: float,
               convention: str = "sklearn_0_1") -> float:
    """AUC x 100 of Chefer's perturbation curve (top-1 accuracy at ``steps``, 0.1 ... 0.9).

    ``sklearn_0_1``: the trapezoid over ``[0, *steps, 1]`` with ``y = [clean, *curve, 0]``, what
    Beyond Intuition's fork computes with ``sklearn.metrics.auc`` (Chefer's script prints the
    accuracies only). ``trapezoid_0.1_0.9``: the trapezoid over ``steps`` alone."""
    y = np.asarray(curve, dtype=np.float64)
    x = np.asarray(steps, dtype=np.float64)
    if convention == "sklearn_0_1":
        x = np.concatenate([[0.0], x, [1.0]])
        y = np.concatenate([[float(clean)], y, [0.0]])
    elif convention != "trapezoid_0.1_0.9":
        raise ValueError(f"AUC convention must be one of {CHEFER_AUC}, got {convention!r}")
    return float(100.0 * np.trapezoid(y, x))


def merge_results(parts: Sequence[CurveResults]) -> CurveResults:
    """Concatenate results (e.g. of several processes) in the order of their ``indices``."""
    # a process with no image has no step counts: describe the run by one that has
    first = next((p for p in parts if p.num_images), parts[0])
    indices = [i for p in parts for i in p.indices]
    order = np.argsort(np.asarray(indices), kind="stable")

    def cat(attr):
        values = [v for p in parts for v in getattr(p, attr)]
        return [values[i] for i in order]

    curves = {name: np.concatenate([p.curves[name] for p in parts if p.num_images]
                                   or [first.curves[name]])[order]
              for name in first.curves}
    return CurveResults(tests=first.tests, names=cat("names"), labels=cat("labels"),
                        curves=curves, positions=first.positions, counts=first.counts,
                        predictions=cat("predictions"), clean_correct=cat("clean_correct"),
                        forward_passes=sum(p.forward_passes for p in parts),
                        indices=cat("indices"))


__all__ = ["Ranking", "Steps", "Substrate", "NormalizedConstant", "UnitConstant", "Blur",
           "FunctionSubstrate", "PerturbationTest", "ForwardQueue", "CurveResults",
           "perturbation_curves", "CurveRun", "merge_results", "gkern", "rise_auc", "chefer_auc",
           "CHEFER_AUC"]
