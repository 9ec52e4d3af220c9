"""The baselines behind the explainer interface. The paper's: ``rollout`` (Attention Rollout) and
``lrp`` (Chefer et al.'s Transformer Attribution); and ``attention`` (raw attention of the last
block), ``gradcam`` (Grad-CAM on the last attention), ``gae`` (Chefer et al.'s generic attention
explainability), ``gradcam_tokens`` (Grad-CAM on the last block's tokens, as pytorch-grad-cam),
``attnlrp`` and ``cplrp`` (AttnLRP and CP-LRP, lxt's gradient x input rules), ``legrad``
(LeGrad), ``ig``, ``ixg``, ``smoothgrad`` (captum's input-gradient methods), ``tam`` (Transition
Attention Maps), ``bt_h`` and ``bt_t`` (Beyond Intuition), ``tokentm`` (TokenTM), ``vitcx``
(ViT-CX), and ``libra_ixg``, ``libra_ig`` (LibraGrad's backward under Input x Gradient and IG).
The floors ``random`` and ``centre`` (a random map, a centred box) are registered like methods.
Importing the package registers them all."""
from baselines.attention import RawAttention
from baselines.attnlrp import CPLRP, AttnLRP, AttnLRPError
from baselines.beyond_intuition import BeyondIntuitionHeadWise, BeyondIntuitionTokenWise
from baselines.floors import CentredBox, RandomMap
from baselines.gae import GenericAttentionExplainability
from baselines.grad_eclip import GradECLIP
from baselines.gradcam import AttentionGradCAM, GradCAMError, TokenGradCAM
from baselines.input_gradients import (
    InputXGradientExplainer,
    IntegratedGradientsExplainer,
    SmoothGradExplainer,
)
from baselines.legrad import LeGrad
from baselines.legrad_clip import LeGradCLIP
from baselines.libragrad import LibraGradError, LibraInputXGradient, LibraIntegratedGradients
from baselines.lrp import LRPError, TransformerAttribution
from baselines.rollout import Rollout
from baselines.tam import TransitionAttentionMaps
from baselines.tokentm import TokenTM
from baselines.vitcx import ViTCX

__all__ = ["CPLRP", "CentredBox", "RandomMap",
           "AttentionGradCAM", "AttnLRP", "AttnLRPError", "GenericAttentionExplainability",
           "GradCAMError", "InputXGradientExplainer", "IntegratedGradientsExplainer", "LRPError",
           "LeGrad", "RawAttention", "Rollout", "SmoothGradExplainer", "TokenGradCAM",
           "TransformerAttribution", "BeyondIntuitionHeadWise", "BeyondIntuitionTokenWise",
           "LibraGradError", "LibraInputXGradient", "LibraIntegratedGradients", "TokenTM",
           "TransitionAttentionMaps", "ViTCX"]
# image-text scores (CLIP): LeGrad's official CLIP recipe and Grad-ECLIP
__all__ += ["GradECLIP", "LeGradCLIP"]
