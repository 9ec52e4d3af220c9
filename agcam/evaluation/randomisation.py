"""Model-parameter randomisation, the sanity check of Adebayo, Gilmer, Muelly, Goodfellow, Hardt &
Kim ("Sanity Checks for Saliency Maps", NeurIPS 2018), as Quantus' ``MPRT`` computes it
(understand-shift-ai/Quantus, ``quantus/metrics/randomisation/mprt.py``, ``layer_order=
"top_down"``). Lower is better: a map that stays the same when the model's weights are destroyed
does not explain the model.

**The cascade.** The model (``explainer.model``, the model the method runs on) is deep-copied
once per batch of images and its layers are re-initialised one after another from the head down,
never restored (cascading): every module that has a ``reset_parameters`` method (timm's ViT:
``Linear``, ``LayerNorm``, the patch embedding's ``Conv2d``), in the reverse of
``model.named_modules()`` order: Quantus' layer set and order. ``randomisation_unit="layer"``
(default) groups them into the model's layers, one step each::

    head -> norm -> blocks[-1] -> ... -> blocks[0] -> patch_embed

(a step is a top-level child of the model, or one element of a top-level ``Sequential`` /
``ModuleList`` such as ``blocks``; ``fc_norm`` or ``norm_pre`` are steps where they have
parameters); ``randomisation_unit="module"`` makes each module a step, as Quantus does (six per
block). The class token, the position embedding and any register tokens belong to no module with
``reset_parameters`` and are left as they are, as in Quantus.

**The initialisation** is the module's own ``reset_parameters()`` (PyTorch's default init:
Kaiming-uniform weights and uniform biases for ``Linear``/``Conv2d``; ones and zeros for
``LayerNorm``), each module right after ``torch.manual_seed(seed + 1)`` with ``seed``
= ``randomisation_seed`` (default 42, Quantus' default): Quantus' draws exactly. This runs inside
``torch.random.fork_rng`` so the caller's random state is untouched, and every batch gets the
same randomised models (a map depends on its image only, not on its batch). The global seed, not
a ``torch.Generator``, because ``reset_parameters()`` takes none and Quantus' draws are the
reference; as in Quantus, every module is drawn from the same seed, so two modules of one shape
(the blocks' ``qkv``, say) get the same random weights. On CUDA the draws are CUDA's (other
numbers than on the CPU, as in Quantus). ``tests/test_randomisation.py`` checks the modules, their
order and the randomised weights of every step against Quantus 0.6.0, and the scores to 1e-10 in
float64 (``tests/fixtures/randomisation/make_references.py``).

**The maps.** After each step (or, with ``randomisation_steps`` = k, after steps
``n * i // k`` for i = 1..k of the n steps: evenly spaced, the last always), the method is built
anew on the randomised copy with
``get_explainer(explainer.name, copy, precision=explainer.precision)``, i.e. with the method's
**default options** (the options the run's explainer was built with cannot be recovered from
it), and explains the same images for the same class as the original map: the predicted class
of the unrandomised model. Both maps are made float64, their absolute value taken
(``randomisation_abs``, default on, Quantus' ``abs=True``) and divided by their maximum absolute
value (Quantus' ``normalise_by_max``; an all-zero map stays zero). Each map is divided by its own
maximum: Quantus' MPRT calls ``normalise_by_max`` on the whole batch, whose default axes include
the batch's, so there a map's scale depends on its batch neighbours (Spearman is unchanged by
that; SSIM is not).

**The similarities**, per image and step:

- ``spearman``: Spearman's rank correlation of the two flattened maps
  (``scipy.stats.spearmanr``, Quantus' ``correlation_spearman``, MPRT's default); NaN where a map
  is constant;
- ``ssim``: ``skimage.metrics.structural_similarity`` of the two 2-D maps with ``data_range``
  the range of the two maps' values together (max - min; Quantus 0.6's ``ssim``) and skimage's
  7 x 7 window, or the largest odd window that fits a smaller map (skimage refuses a window
  larger than the map); NaN where both maps are one constant or a side is under 3. Quantus' MPRT
  would give SSIM the flattened maps (a 1-D signal); here it sees them as images, as in the
  paper.

**The summary**: ``curve`` (the mean Spearman per step, the report's curve), ``ssim_curve``,
``layers`` (the step names), ``spearman`` (the one number: mean Spearman over images and steps,
lower is better), ``spearman_last`` (at full randomisation), ``ssim`` (mean over steps), and
``fails``: True when ``spearman_last`` exceeds ``randomisation_threshold`` (0.5): the method's
maps are still ranked as before once every layer is random, and the summary carries a
``warning`` that says so.

``fails`` reads the last step only: a method can pass while its maps hold on through most of the
cascade (the curve shows it).

Cost: one explanation of the batch per step (``depth + 3`` for a timm ViT by layer), plus one
deep copy of the model per batch.
"""
from __future__ import annotations

import warnings
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

from agcam.evaluation.base import Column, EvalBatch, Evaluation, Needs, register_evaluation

#: Quantus' MPRT default seed; each module is reset right after ``torch.manual_seed(seed + 1)``
SEED = 42
#: above this mean Spearman at full randomisation, the method fails the check
THRESHOLD = 0.5
UNITS = ("layer", "module")


def cascade(model, unit: str = "layer") -> List[Tuple[str, List[str]]]:
    """The randomisation steps of ``model``, head first: ``[(step name, [module names])]``.

    The modules are those with ``reset_parameters`` in the reverse of ``named_modules()`` order
    (Quantus' ``get_random_layer_generator(order="top_down")``); ``unit="layer"`` groups
    consecutive ones by the model's top-level child (an element of a top-level ``Sequential`` or
    ``ModuleList`` is a layer of its own), ``unit="module"`` keeps one module per step."""
    from torch import nn

    if unit not in UNITS:
        raise ValueError(f"randomisation_unit must be one of {', '.join(UNITS)}, got {unit!r}")
    names = [name for name, module in model.named_modules()
             if hasattr(module, "reset_parameters")][::-1]
    if unit == "module":
        return [(name, [name]) for name in names]
    containers = {name for name, child in model.named_children()
                  if isinstance(child, (nn.Sequential, nn.ModuleList))}
    steps: List[Tuple[str, List[str]]] = []
    for name in names:
        parts = name.split(".")
        key = ".".join(parts[:2]) if parts[0] in containers and len(parts) > 1 else parts[0]
        if steps and steps[-1][0] == key:
            steps[-1][1].append(name)
        else:
            steps.append((key, [name]))
    return steps


def randomise(model, modules: Sequence[str], seed: int = SEED) -> None:
    """Re-initialise ``modules`` of ``model`` in place, in order, each with its own
    ``reset_parameters()`` right after ``torch.manual_seed(seed + 1)`` (Quantus' MPRT), inside a
    forked random state (the caller's is left as it was)."""
    import torch

    table = dict(model.named_modules())
    devices = sorted({p.device.index or 0 for p in model.parameters() if p.device.type == "cuda"})
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        for name in modules:
            torch.manual_seed(seed + 1)
            table[name].reset_parameters()


def checkpoints(num_steps: int, wanted: int) -> List[int]:
    """The 0-based steps after which maps are compared: all (``wanted`` 0 or at least
    ``num_steps``), else ``wanted`` evenly spaced ones, the last (full randomisation) always."""
    if wanted <= 0 or wanted >= num_steps:
        return list(range(num_steps))
    return sorted({(num_steps * i) // wanted - 1 for i in range(1, wanted + 1)})


def normalise(a, absolute: bool = True) -> np.ndarray:
    """A map as compared: float64, absolute value (``absolute``), divided by its maximum
    absolute value (Quantus' ``normalise_by_max``); an all-zero map stays zero."""
    a = np.asarray(a, dtype=np.float64)
    if absolute:
        a = np.abs(a)
    top = np.abs(a).max()
    return a / top if top > 0 else a


def spearman(a, b) -> float:
    """Spearman's rank correlation of two maps, flattened (NaN where one is constant)."""
    from scipy.stats import spearmanr

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")     # a constant map: NaN, counted apart
        return float(spearmanr(np.ravel(a), np.ravel(b)).statistic)


def ssim(a, b) -> float:
    """SSIM of two 2-D maps (skimage) with ``data_range`` the range of the two maps together
    (Quantus' ``ssim``) and a 7 x 7 window, or the largest odd one that fits a smaller map."""
    from skimage.metrics import structural_similarity

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    side = min(a.shape[-2:])
    window = min(7, side if side % 2 else side - 1)
    both = np.concatenate([a, b])
    data_range = float(np.abs(both.max() - both.min()))
    if window < 3 or data_range == 0:
        return float("nan")
    return float(structural_similarity(a, b, win_size=window, data_range=data_range))


@register_evaluation
class Randomisation(Evaluation):
    """Cascading model-parameter randomisation (see the module docstring). Options
    ``randomisation_unit`` ("layer" or "module"), ``randomisation_steps`` (0: every step),
    ``randomisation_seed`` (42), ``randomisation_threshold`` (0.5), ``randomisation_abs``
    (True)."""

    name = "randomisation"
    label = "Randomisation"
    needs = Needs(target="predicted")
    columns = (Column("spearman", "mean Spearman over layers", higher_is_better=False),
               Column("spearman_last", "Spearman, all random", higher_is_better=False),
               Column("ssim", "mean SSIM over layers", higher_is_better=False))
    curve_keys = ("curve", "ssim_curve")

    def __init__(self, randomisation_unit: str = "layer", randomisation_steps: int = 0,
                 randomisation_seed: int = SEED, randomisation_threshold: float = THRESHOLD,
                 randomisation_abs: bool = True, **options):
        super().__init__(**options)
        if randomisation_unit not in UNITS:
            raise ValueError(f"randomisation_unit must be one of {', '.join(UNITS)}, "
                             f"got {randomisation_unit!r}")
        self.unit = randomisation_unit
        self.steps = int(randomisation_steps)
        if self.steps < 0:
            raise ValueError(f"randomisation_steps must be 0 (all) or positive, got "
                             f"{randomisation_steps}")
        self.seed = int(randomisation_seed)
        self.threshold = float(randomisation_threshold)
        self.absolute = bool(randomisation_abs)

    def describe(self) -> str:
        steps = "every step" if self.steps <= 0 else f"{self.steps} evenly spaced steps"
        return (f"every image, map of the predicted class; cascading randomisation head -> "
                f"norm -> blocks[-1] -> ... -> patch_embed (unit {self.unit}, {steps}; each "
                f"module's reset_parameters() after torch.manual_seed({self.seed + 1}), as "
                f"Quantus' MPRT), the method rebuilt with its default options; "
                f"{'|map|' if self.absolute else 'map'} / max|map|; Spearman (flattened) and "
                f"SSIM (2-D, data_range: the pair's range, as Quantus) against the original "
                f"map; fails if the mean Spearman at full randomisation exceeds {self.threshold:g}")

    def score(self, batch: EvalBatch) -> List[Dict[str, Any]]:
        import copy

        import torch

        from agcam.registry import get_explainer

        explainer = batch.extra.get("explainer")
        if explainer is None:
            raise ValueError("the randomisation evaluation needs the method's explainer "
                             "(EvalBatch.extra['explainer'])")
        original = batch.maps.detach().cpu().double().numpy()
        targets = torch.as_tensor(batch.predictions, dtype=torch.long,
                                  device=batch.inputs.device)
        model = copy.deepcopy(explainer.model)
        steps = cascade(model, self.unit)
        compared = checkpoints(len(steps), self.steps)
        firsts = [normalise(m, self.absolute) for m in original]
        records = [{"layers": [], "spearman": [], "ssim": []} for _ in batch.indices]
        for index, (step, modules) in enumerate(steps):
            randomise(model, modules, self.seed)
            if index not in compared:
                continue
            randomised = get_explainer(explainer.name, model, precision=explainer.precision)
            maps = randomised.explain(batch.inputs, target=targets).maps
            maps = maps.detach().cpu().double().numpy()
            for record, first, after in zip(records, firsts, maps):
                after = normalise(after, self.absolute)
                record["layers"].append(step)
                record["spearman"].append(spearman(first, after))
                record["ssim"].append(ssim(first, after))
        return records

    def summarize(self, records, context) -> Dict[str, Any]:
        summary: Dict[str, Any] = {"num_images": len(records), "threshold": self.threshold}
        if not records:
            return summary
        rho = np.array([r["spearman"] for r in records], dtype=np.float64)
        sim = np.array([r["ssim"] for r in records], dtype=np.float64)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")     # a step where every image's map is constant
            curve, ssim_curve = np.nanmean(rho, axis=0), np.nanmean(sim, axis=0)
        summary.update(
            layers=list(records[0]["layers"]), curve=[float(v) for v in curve],
            ssim_curve=[float(v) for v in ssim_curve],
            undefined=int(np.isnan(rho).any(axis=1).sum()),
            spearman=_nanmean(curve), spearman_last=float(curve[-1]),
            ssim=_nanmean(ssim_curve), ssim_last=float(ssim_curve[-1]))
        summary["fails"] = bool(summary["spearman_last"] > self.threshold)
        if summary["fails"]:
            summary["warning"] = (f"fails the randomisation check: its maps keep a mean "
                                  f"Spearman correlation of {summary['spearman_last']:.3f} "
                                  f"(> {self.threshold:g}) with the original once every layer "
                                  "is randomised: they do not depend on the model's weights")
        return summary


def _nanmean(values) -> float:
    values = np.asarray(values, dtype=np.float64)
    values = values[~np.isnan(values)]
    return float(values.mean()) if len(values) else float("nan")

