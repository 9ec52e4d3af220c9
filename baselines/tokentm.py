"""TokenTM: Wu, Duan, Kang, Tang & Yan, "Token Transformation Matters: Towards Faithful Post-hoc
Explanation for Vision Transformer" (CVPR 2024).

**No code from the authors is public.** This is written from the paper's definitions as the one
public reimplementation restates them (``transform_TokenTM`` in ``decompv/x/ds/utils.py`` of
NightMachinery/decompv-libragrad-v1, the LibraGrad authors' benchmark code; the paper's full text
was not reachable from this machine, so its equation numbers are not quoted). Where a choice was
open it follows that reimplementation, and ``tests/test_new_methods.py`` checks every equation on
hand-worked cases and the whole map against that reimplementation's output in float64.

Token transformation effect of a transformation ``E -> E~`` (tokens ``[N, C]``):

    L(e)   = ||e||_2                                       (token length)
    NECC   = softmax_n( cos(E_n, E~_n) )                   (normalised direction coherence)
    W(E, E~) = diag( L(E~_n) / (L(E_n) + 1e-8) * NECC_n )

Initialisation and aggregation over blocks l = 1..L (``E^0`` the embedded tokens entering block 1,
``E^l_mid`` the tokens after the attention's residual add, ``E^l`` the block's output;
``Abar_l = mean_h A_l`` the head-averaged attention, ``G_l = mean_h max(0, dy_c/dA_l)``):

    C_0     = diag( L(E^0_n) )
    U_attn  = I + (Abar_l @ W(E^{l-1}, E^l_mid)) ⊙ G_l
    U_mlp   = I + W(E^l_mid, E^l)
    C_l     = U_mlp @ U_attn @ C_{l-1}
    map     = C_L[c, P]

(``c`` the class-token row, ``P`` the patch columns: every prefix column dropped). The
gradients are those of the explained logit ``y_c`` (the decompv runs differentiate the softmax
probability by default; the logit is this project's convention for every gradient method).
One forward and one backward pass; a batch gives each image its own gradient.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from agcam.explainer import Explainer
from agcam.precision import DEFAULT_PRECISION
from agcam.registry import register
from baselines.tam import attention_tapes
from models import forward

#: the stabiliser of the length ratio (decompv's ``epsilon``)
LENGTH_EPSILON = 1e-8


def token_lengths(tokens: torch.Tensor) -> torch.Tensor:
    """``L``: the L2 norm of every token, ``[B, N, C] -> [B, N]``."""
    return tokens.norm(p=2, dim=-1)


def necc(before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
    """NECC: softmax over tokens of each token's cosine similarity before/after, ``[B, N]``."""
    return F.cosine_similarity(before, after, dim=-1).softmax(dim=-1)


def transformation_weights(before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
    """``W(E, E~)``: the diagonal of the token transformation effect, ``[B, N]``."""
    ratio = token_lengths(after) / (token_lengths(before) + LENGTH_EPSILON)
    return ratio * necc(before, after)


def attention_update(attention: torch.Tensor, gradient: torch.Tensor, before: torch.Tensor,
                     after: torch.Tensor) -> torch.Tensor:
    """``U_attn = I + (Abar @ diag(W)) ⊙ G`` from the attention and its gradient ``[B, H, N, N]``
    and the tokens before/after the attention's residual add."""
    mean_attention = attention.mean(dim=1)
    positive_gradient = gradient.clamp(min=0).mean(dim=1)
    weighted = mean_attention * transformation_weights(before, after)[:, None, :]
    eye = torch.eye(weighted.shape[-1], dtype=weighted.dtype, device=weighted.device)
    return eye + weighted * positive_gradient


def mlp_update(before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
    """``U_mlp = I + diag(W)`` from the tokens before/after the MLP's residual add."""
    return torch.diag_embed(1 + transformation_weights(before, after))


def tokentm_relevance(embedded: torch.Tensor, tapes: Sequence[dict],
                      gradients: Sequence[torch.Tensor]) -> torch.Tensor:
    """``C_L``, ``[B, N, N]``, from the embedded tokens, the blocks' tapes (``attn``, ``x_in``,
    ``x_mid``, ``x_out``) and the attention gradients."""
    C = torch.diag_embed(token_lengths(embedded))
    for tape, gradient in zip(tapes, gradients):
        u_attn = attention_update(tape["attn"], gradient, tape["x_in"], tape["x_mid"])
        u_mlp = mlp_update(tape["x_mid"], tape["x_out"])
        C = torch.matmul(u_mlp, torch.matmul(u_attn, C))
    return C


@register("tokentm", label="TokenTM")
class TokenTM(Explainer):
    """TokenTM: attention weighted by token transformation effects and positive gradients,
    aggregated over every block from the embedded tokens' lengths."""

    def __init__(self, model, precision: str = DEFAULT_PRECISION):
        super().__init__(model, precision)
        for index, blk in enumerate(self.model.blocks):
            forward.check_block(blk, index)

    def _explain(self, images, targets):
        predictions, _, tapes, grads = attention_tapes(self.model, images, targets,
                                                       gradients=True)
        C = tokentm_relevance(tapes[0]["x_in"], tapes, grads)
        return predictions, C[:, 0, self.patch_columns()]
