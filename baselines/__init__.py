"""The baselines behind the explainer interface. The paper's: ``rollout`` (Attention Rollout) and
``lrp`` (Chefer et al.'s Transformer Attribution); and ``attention`` (raw attention of the last
block), ``gradcam`` (Grad-CAM on the last attention), ``gae`` (Chefer et al.'s generic attention
explainability) and ``gradcam_tokens`` (Grad-CAM on the last block's tokens, as pytorch-grad-cam).
Importing the package registers them all."""
from baselines.attention import RawAttention
from baselines.gae import GenericAttentionExplainability
from baselines.gradcam import AttentionGradCAM, GradCAMError, TokenGradCAM
from baselines.lrp import LRPError, TransformerAttribution
from baselines.rollout import Rollout

__all__ = ["AttentionGradCAM", "GenericAttentionExplainability", "GradCAMError", "LRPError",
           "RawAttention", "Rollout", "TokenGradCAM", "TransformerAttribution"]
