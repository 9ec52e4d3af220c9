"""Completeness: the sum of a raw map against the explained logit, reported for every method and
flagged for the methods that claim it.

For each image, with ``c`` the predicted class, ``y_c(x)`` its logit and ``y_c(0)`` the logit of
the all-zero model input (the data set's mean image, the baseline of ``ig`` and ``libra_ig``):

    sum      = sum of the raw map (patch grid or pixels, as the method returns it)
    error    = |sum - y_c(x)| / |y_c(x)|               (LRP family: relevance conserved)
    error_ig = |sum - (y_c(x) - y_c(0))| / |y_c(x) - y_c(0)|   (IG: the path's end points)

The summary gives the means over images, and ``claims`` names what the method claims
(:data:`CLAIMS`): ``"logit"`` for the LRP-family methods, ``"logit - baseline"`` for Integrated
Gradients, ``""`` for the others (their numbers are reported, not judged). Lower is better. The
LRP-family maps here are not exactly complete on a model with biases (a bias keeps its share of
the relevance), so their error measures the share the biases and the class token absorb.
"""
from __future__ import annotations

from typing import Any, Dict, List

import numpy as np

from agcam.evaluation.base import Column, EvalBatch, Evaluation, Needs, register_evaluation

#: what each method claims its map sums to
CLAIMS = {"attnlrp": "logit", "cplrp": "logit", "ig": "logit - baseline",
          "libra_ig": "logit - baseline"}


@register_evaluation
class Completeness(Evaluation):
    """The sum of each map against the predicted class's logit (see the module docstring)."""

    name = "completeness"
    label = "Completeness"
    needs = Needs(target="predicted")
    columns = (Column("error", "|sum - logit| / |logit|", higher_is_better=False),
               Column("error_ig", "|sum - (logit - baseline)| / |...|", higher_is_better=False))

    def describe(self) -> str:
        return ("every image, map of the predicted class, raw; its sum against the logit y_c(x) "
                "and against y_c(x) - y_c(0) (the zero-input baseline of IG); relative, mean")

    def score(self, batch: EvalBatch) -> List[Dict[str, Any]]:
        import torch

        inputs = batch.inputs
        classes = torch.as_tensor(batch.predictions, device=inputs.device)[:, None]
        with torch.no_grad():
            logit = batch.model(inputs).gather(1, classes)[:, 0].double().cpu().numpy()
            base = batch.model(torch.zeros_like(inputs)).gather(1, classes)[:, 0]
            base = base.double().cpu().numpy()
        sums = batch.maps.detach().double().reshape(len(batch.indices), -1).sum(1).cpu().numpy()
        return [{"sum": float(s), "logit": float(y), "baseline": float(b)}
                for s, y, b in zip(sums, logit, base)]

    def summarize(self, records, context) -> Dict[str, Any]:
        method = context.get("method", "")
        summary: Dict[str, Any] = {"num_images": len(records), "claims": CLAIMS.get(method, "")}
        if not records:
            return summary
        sums = np.array([r["sum"] for r in records])
        logits = np.array([r["logit"] for r in records])
        gaps = logits - np.array([r["baseline"] for r in records])
        summary["error"] = float(np.mean(np.abs(sums - logits) / np.abs(logits)))
        summary["error_ig"] = float(np.mean(np.abs(sums - gaps) / np.abs(gaps)))
        summary["mean_sum"] = float(sums.mean())
        summary["mean_logit"] = float(logits.mean())
        return summary
