"""The paper's baselines behind the explainer interface: ``rollout`` (Attention Rollout) and ``lrp``
(Chefer et al.'s Transformer Attribution). Importing the package registers both."""
from baselines.lrp import LRPError, TransformerAttribution
from baselines.rollout import Rollout

__all__ = ["LRPError", "Rollout", "TransformerAttribution"]
