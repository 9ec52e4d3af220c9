"""One interface for every evaluation of explanation maps, and their registry.

An :class:`Evaluation` states what it needs (:class:`Needs`: the class whose map it reads, label
or predicted; whether it re-scores perturbed images with the model; boxes, masks or labels from
the data set) and turns a batch of explained images (:class:`EvalBatch`) into one plain record
per image, then a list of records into numbers (:meth:`Evaluation.summarize`). Neither step does
I/O: reading data, explaining, caching, resuming and writing are the runner's
(:mod:`agcam.evaluation.run`) and the report's (:mod:`agcam.report`).

Records are plain JSON data (numbers, lists, strings), so the runner can keep them on disk, one
line per unit of images, and a resumed run summarises exactly what an uninterrupted one does.

Adding an evaluation is one file with a subclass decorated ``@register_evaluation`` plus its
module's name in :data:`EVALUATION_MODULES`; it then appears in ``agcam evaluate --eval``, the
report and the figures.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

#: modules whose import registers the evaluations (found by name, as the method registry does)
EVALUATION_MODULES = ("agcam.evaluation.localization", "agcam.evaluation.wsol",
                      "agcam.evaluation.abpc", "agcam.evaluation.perturbation",
                      "agcam.evaluation.segmentation", "agcam.evaluation.pointing",
                      "agcam.evaluation.completeness", "agcam.evaluation.saco",
                      "agcam.evaluation.randomisation")
#: the order of ``--eval all`` and of the report's tables
EVALUATION_ORDER = ("localization", "maxboxacc", "abpc", "positive", "negative", "insertion",
                    "deletion", "segmentation", "pointing", "completeness",
                    "saco", "randomisation")
EVALUATIONS: Dict[str, type] = {}
_loaded = False


@dataclass(frozen=True)
class Needs:
    """What an evaluation needs of the run.

    ``target``: the class whose map it reads, ``"label"`` or ``"predicted"`` (the one prediction
    the runner makes per image). ``rescoring``: it runs the model on perturbed images.
    ``labels``, ``boxes``, ``masks``: what the data set must provide. ``correct_only``: only
    images whose prediction is the label count (the paper's localization).
    """

    target: str = "predicted"
    rescoring: bool = False
    labels: bool = False
    boxes: bool = False
    masks: bool = False
    correct_only: bool = False


@dataclass(frozen=True)
class Column:
    """One number of a summary: its key, its header and which way is better."""

    key: str
    label: str
    higher_is_better: bool = True


@dataclass
class EvalBatch:
    """What the runner hands an evaluation for one unit of readable images.

    ``maps`` is the raw ``[B, h, w]`` map (patch grid or pixels) of the class ``needs.target``
    names; ``inputs`` the normalised model input ``[B, 3, H, W]`` on the model's device.
    """

    indices: List[int]
    names: List[str]
    labels: Optional[List[int]]
    predictions: List[int]
    inputs: Any
    maps: Any
    model: Any
    geometry: Any
    precision: str = "fp32"
    boxes: Optional[List[Any]] = None          # ground-truth boxes, model-input pixels
    source_boxes: Optional[List[Any]] = None   # the same in original pixels
    sizes: Optional[List[Tuple[int, int]]] = None   # original (width, height)
    masks: Optional[Any] = None                # [B, H, W] foreground masks
    extra: Dict[str, Any] = field(default_factory=dict)


class Evaluation:
    """Base class: see the module docstring. Options are constructor keywords; unknown ones are
    ignored (one option namespace serves every evaluation of a run)."""

    name: str = ""
    label: str = ""
    needs: Needs = Needs()
    #: one line saying what is computed and how (the report prints it beside the table)
    convention: str = ""
    columns: Tuple[Column, ...] = ()
    #: for curve evaluations: the key of the per-step values in the summary (``None``: none)
    curve_keys: Tuple[str, ...] = ()

    def __init__(self, **options):
        self.options = options

    def describe(self) -> str:
        """The convention with the options that set it."""
        return self.convention

    def score(self, batch: EvalBatch) -> List[Dict[str, Any]]:
        """One plain record per image of ``batch`` (no I/O)."""
        raise NotImplementedError

    def summarize(self, records: Sequence[Dict[str, Any]], context: Dict[str, Any]
                  ) -> Dict[str, Any]:
        """The numbers of the run from the records of every image, in index order. ``context``
        holds the run's method, model and data set names."""
        raise NotImplementedError


class CurveEvaluation(Evaluation):
    """An evaluation computed by :func:`agcam.evaluation.curves.perturbation_curves`: the
    runner puts every curve evaluation that reads the same heatmap (same target and recipe)
    into one call, so their forward passes are batched across tests, steps and images."""

    #: the heatmap recipe of :func:`agcam.maps.to_heatmap`
    recipe: str = "chefer"

    def tests(self, geometry) -> list:
        """The :class:`agcam.evaluation.curves.PerturbationTest` objects it needs."""
        raise NotImplementedError

    def records_from(self, results, rows: Sequence[int]) -> List[Dict[str, Any]]:
        """Records of ``rows`` of a :class:`agcam.evaluation.curves.CurveResults`."""
        raise NotImplementedError


def register_evaluation(cls):
    """Class decorator: make an evaluation available under ``cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    if cls.name in EVALUATIONS and EVALUATIONS[cls.name] is not cls:
        raise ValueError(f"two evaluations registered as {cls.name!r}")
    cls.label = cls.label or cls.name
    EVALUATIONS[cls.name] = cls
    return cls


def load_evaluations() -> None:
    global _loaded
    if not _loaded:
        for module in EVALUATION_MODULES:
            importlib.import_module(module)
        _loaded = True


def available_evaluations() -> Tuple[str, ...]:
    """Every registered evaluation, in :data:`EVALUATION_ORDER` then by name."""
    load_evaluations()
    known = [n for n in EVALUATION_ORDER if n in EVALUATIONS]
    return tuple(known + sorted(n for n in EVALUATIONS if n not in EVALUATION_ORDER))


def get_evaluation(name: str, **options) -> Evaluation:
    """The evaluation registered as ``name``; ``ValueError`` listing the names otherwise."""
    load_evaluations()
    if name not in EVALUATIONS:
        raise ValueError(f"unknown evaluation {name!r}; choose from "
                         f"{', '.join(available_evaluations())}")
    return EVALUATIONS[name](**options)
