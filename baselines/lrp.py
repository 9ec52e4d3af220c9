"""Transformer Attribution (Chefer, Gur & Wolf, CVPR 2021) as hila-chefer/Transformer-Explainability
computes it (``method="transformer_attribution"``, ``start_layer=0``), on a plain timm ViT.

One forward pass of our own through the model's modules (nothing is patched, hooked or copied)
keeps what the relevance rules need; then, for the explained class c:

* ``G_k = d y_c / d A_k``: the ordinary gradient of the class logit with respect to every block's
  post-softmax attention (full gradient, no cut);
* ``R_k``: the relevance of ``A_k`` from an LRP pass that starts at the one-hot vector of c (not
  multiplied by the logit) and uses the rules below;
* ``Abar_k = mean_h max(G_k * R_k, 0)``, ``C = (Abar_L + I) @ ... @ (Abar_1 + I)`` (forward order,
  no normalisation); the map is ``C[cls, patches]``.

Relevance rules (``safe(a, b) = a / (b + 1e-9)`` where ``b != 0``, 0 where ``b == 0``):

* linear (head, qkv, proj, fc1, fc2), alpha = 1, beta = 0, bias ignored:
  ``Z = X+ W+^T + X- W-^T``, ``S = safe(R, Z)``, ``R_in = X+ * (S W+) + X- * (S W-)``; the beta
  half of the released rule is multiplied by 0 and is skipped (exact);
* LayerNorm, GELU, softmax, dropout, drop-path, the attention's ``* scale`` and layer scale
  (``ls1``, ``ls2``): relevance passes unchanged;
* class-token pooling: ``R_in`` is ``X0 * safe(R, X0)`` at the class token, 0 elsewhere;
* residual sum ``y = u + v``: ``R_u = u * safe(R, y)``, ``R_v = v * safe(R, y)``, then rescaled
  so that, with ``a = sum R_u``, ``b = sum R_v``, ``R_u *= safe(safe(|a|, |a|+|b|) * sum R, a)``
  (likewise v); sums run over one image;
* residual branch point: ``R_x = x * (safe(R_skip, x) + safe(R_branch, x))``;
* ``A @ V`` and ``Q @ K^T`` (unscaled): the z-rule on both operands, both halves halved; the
  halved relevance of ``A`` is ``R_k``.

The released forward's quirk, kept by default. The released LRP model (``Methods/LRP/ViT_LRP.py``)
builds its block norms with ``eps=1e-6`` but its final norm with PyTorch's default ``eps=1e-5``
(``self.norm = LayerNorm(embed_dim)``), while timm's ViT uses 1e-6 everywhere: the released LRP
explains a slightly different forward pass than the model's own. With ``final_norm_eps="released"``
(the default) LRP's own forward uses ``eps=1e-5`` in the final norm, and its predictions are the
argmax of that forward; the model object is not changed. ``final_norm_eps="model"`` keeps the
model's own eps. The released float64 maps are reproduced only with the released eps
(``tests/test_exactness.py``; the figures are in docs/exactness.md). A model whose final norm is
not a LayerNorm has nothing to change.

Departures from the released code:

* It normalises the residual sums over the whole tensor and reads batch element 0, so it explains
  one image per call; here every sum is per image, so a batch gives the single-image results (up
  to float rounding, see below).
* Its model has one prefix token and no layer scale. Here any number of prefix tokens is allowed
  (the map is the class-token row over the patch columns, every prefix column dropped) and layer
  scale passes relevance unchanged.
* DeiT's distilled models average two heads, ``y = (head(x_cls) + head_dist(x_dist)) / 2``. The
  average is treated as a residual sum of ``u = head(x_cls) / 2`` and ``v = head_dist(x_dist) / 2``
  (the ``/ 2`` passes relevance), so relevance enters the blocks at the class and the
  distillation token.

Work skipped because it is exactly zero or unused: the beta = 0 half of the linear rule; every rule
below the first block's attention; in the top block, every row after the keys and values except
the pooled tokens' (only they reach the classifier, so the other rows of ``G_L`` and ``R_L`` are 0).

Numerics. The released LRP divides by sums that can be near zero, so a change in the last bit of
one intermediate (another CPU kernel, another batch size, float64) can move the map of an unlucky
image by up to 20%. Everything is computed in the model's dtype (float32 for the reference
numbers) with the released rules in the order written above, but the bits of a run depend on the
machine's kernels; ``tests/test_baselines.py`` says what is reproduced here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from agcam.explainer import Explainer, class_scores
from agcam.precision import DEFAULT_PRECISION
from agcam.registry import register
from models import forward
from models.forward import is_timm_attention

#: ``final_norm_eps`` choices: the released LRP model's final-norm eps, or the model's own
FINAL_NORM_EPS = ("released", "model")
#: PyTorch's default LayerNorm eps, which the released LRP model's final norm uses
RELEASED_FINAL_NORM_EPS = 1e-5


class LRPError(RuntimeError):
    """The model has a part that Transformer Attribution has no relevance rule for."""


# -- relevance rules ------------------------------------------------------------------------------
# Each rule gives the same floats as the released code (up to the sign of zeros) in fewer passes
# over memory: the released multiplications by 0/1 masks become masked fills, made only where one
# read of the denominator (its smallest magnitude) says a masked value can be there; quotients and
# products are formed in place, the weights' positive and negative parts are kept between calls
# (TransformerAttribution.split), and the released autograd calls become the matrix products they
# compute.
def safe_divide(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The released ``safe_divide``: ``a / (b + 1e-9)`` where ``b != 0``, else 0.

    (The released helper also replaces a zero denominator, ``b == -1e-9``, by ``1e-9``.)
    """
    den = b + 1e-9
    if _has_special(b):
        zero_den = den == 0
        if bool(zero_den.any()):         # rare: released den + (den == 0) * 1e-9
            den.masked_fill_(zero_den, 1e-9)
        return _zero_where(torch.div(a, den), b == 0)
    return _divide_into(a, den)


def _divide_into(a: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """``a / den``, written into ``den`` (a temporary of the caller's) when the shapes allow."""
    if den.shape == a.shape and den.dtype == a.dtype:
        return torch.div(a, den, out=den)
    return torch.div(a, den)


def _has_special(b: torch.Tensor) -> bool:
    """Whether ``b`` may hold a 0 or a ``-1e-9`` (``b + 1e-9 == 0``), the two values that need
    the released masks: one read of ``b`` (``min |b|``) instead of two comparisons and two scans.

    ``min |b| > 2e-9`` rules both out (then ``|b + 1e-9| > 1e-9`` in exact arithmetic, which
    rounding cannot bring to 0); a NaN compares False and takes the masked path.
    """
    return not bool(torch.linalg.vector_norm(b, ord=float("-inf")) > 2e-9)


def _safe_divide_nonnegative(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """:func:`safe_divide` for ``b >= 0`` (``b + 1e-9`` is then never 0); ``b`` is overwritten."""
    # min(b) == 0 is one read of b; the mask is made only when a zero is there.
    mask = b == 0 if b.numel() and bool(b.amin() == 0) else None
    out = _divide_into(a, b.add_(1e-9))
    return out if mask is None else out.masked_fill_(mask, 0.0)


def _zero_where(out: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    # The released code multiplies by the 0/1 mask; a fill gives the same numbers (up to the
    # sign of zeros) and is skipped when nothing is masked.
    return out.masked_fill_(mask, 0.0) if bool(mask.any()) else out


def split_weight(weight: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(W+, W-)`` of a linear layer's ``[out, in]`` weight."""
    return weight.clamp(min=0), weight.clamp(max=0)


def linear_relevance(R: torch.Tensor, X: torch.Tensor,
                     weights: Tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Alpha-beta rule, alpha = 1, beta = 0, bias ignored: ``R [..., out] -> R_in [..., in]``.

    ``Z = X+ W+^T + X- W-^T``, ``S = safe(R, Z)``, ``R_in = X+ * (S W+) + X- * (S W-)``.
    """
    weight_pos, weight_neg = weights
    X_pos, X_neg = X.clamp(min=0), X.clamp(max=0)
    Z = F.linear(X_pos, weight_pos)
    Z += F.linear(X_neg, weight_neg)
    S = _safe_divide_nonnegative(R, Z)          # Z >= 0
    # X+ and X- have disjoint supports: one of the two terms is always exactly 0, so this
    # equals the released X+ * (S W+) + X- * (S W-) to the bit.
    return torch.matmul(S, weight_neg).mul_(X_neg).addcmul_(X_pos, torch.matmul(S, weight_pos))


def residual_relevance(R: torch.Tensor, u: torch.Tensor, v: torch.Tensor,
                       y: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """``y = u + v``: split ``R`` by the z-rule, then rescale per image (dim 0 is the batch).

    ``R_u = u * safe(R, y)``, ``R_v = v * safe(R, y)``; with ``a = sum R_u``, ``b = sum R_v``
    (over one image): ``R_u *= safe(safe(|a|, |a| + |b|) * sum R, a)``, likewise ``R_v``.
    ``y`` may be passed when the forward already computed ``u + v``.
    """
    S = safe_divide(R, u + v if y is None else y)
    Ru = u * S
    Rv = v * S
    dims = tuple(range(1, R.dim()))
    a = Ru.sum(dim=dims, keepdim=True)
    b = Rv.sum(dim=dims, keepdim=True)
    total = R.sum(dim=dims, keepdim=True)
    a_fact = safe_divide(a.abs(), a.abs() + b.abs()) * total
    b_fact = safe_divide(b.abs(), a.abs() + b.abs()) * total
    return Ru.mul_(safe_divide(a_fact, a)), Rv.mul_(safe_divide(b_fact, b))


def branch_relevance(R_skip: torch.Tensor, R_branch: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``x`` feeds the skip and the branch of a residual:
    ``R_x = x * (safe(R_skip, x) + safe(R_branch, x))``."""
    den = x + 1e-9
    special = _has_special(x)
    if special:
        den.masked_fill_(den == 0, 1e-9)
    out = torch.div(R_skip, den).add_(_divide_into(R_branch, den))
    return (out.masked_fill_(x == 0, 0.0) if special else out).mul_(x)


# -- the forward pass -----------------------------------------------------------------------------
@dataclass
class _BlockTape:
    """What one block's forward keeps for the relevance pass (all detached)."""

    x_in: torch.Tensor        # [B, N, D] block input (skip of the first residual)
    h1: torch.Tensor          # [B, N, D] norm1 output = qkv input
    q: torch.Tensor           # [B, H, N, d] (after q_norm)
    k: torch.Tensor           # [B, H, N, d] (after k_norm)
    v: torch.Tensor           # [B, H, N, d]
    qk: torch.Tensor          # [B, H, N, N] unscaled q @ k^T
    attn: torch.Tensor        # [B, H, N, N] post-softmax attention A
    av: torch.Tensor          # [B, H, N, d] A @ V
    proj_in: torch.Tensor     # [B, N, H*d]
    attn_branch: torch.Tensor  # [B, N, D] what the first residual adds (after ls1, drop path)
    x_mid: torch.Tensor       # [B, N, D] after the first residual
    h2: torch.Tensor          # [B, N, D] norm2 output = fc1 input
    fc2_in: torch.Tensor      # [B, N, hidden]
    mlp_branch: torch.Tensor  # [B, N, D] what the second residual adds (after ls2, drop path)
    x_out: torch.Tensor       # [B, N, D] block output = x_mid + mlp_branch


def _check_supported(model: nn.Module) -> None:
    for name in ("patch_embed", "_pos_embed", "blocks", "norm", "head"):
        if not hasattr(model, name):
            raise LRPError(f"{type(model).__name__} has no `{name}`; "
                           "lrp needs a timm VisionTransformer")
    if getattr(model, "head_dist", None) is None:
        if getattr(model, "attn_pool", None) is not None or \
                getattr(model, "global_pool", "token") != "token":
            raise LRPError("lrp needs class-token pooling (global_pool='token', no attn_pool)")
    for name in ("head", "head_dist"):
        head = getattr(model, name, None)
        if name == "head" or head is not None:
            if not isinstance(head, nn.Linear):
                raise LRPError(f"{name} is {type(head).__name__}; "
                               "lrp needs an nn.Linear classifier")
    for i, blk in enumerate(model.blocks):
        missing = [n for n in ("norm1", "attn", "ls1", "norm2", "mlp", "ls2")
                   if not hasattr(blk, n)]
        if missing:
            raise LRPError(f"block {i} ({type(blk).__name__}) lacks {missing}; lrp needs timm's "
                           "pre-norm Block")
        attn, mlp = blk.attn, blk.mlp
        if not is_timm_attention(attn):
            raise LRPError(f"block {i}: {type(attn).__name__} is not a timm Attention "
                           "with a fused qkv")
        if getattr(attn, "gate", None) is not None:
            raise LRPError(f"block {i}: gated attention has no relevance rule")
        if not all(isinstance(getattr(mlp, n, None), nn.Linear) for n in ("fc1", "fc2")) or \
                not hasattr(mlp, "act"):
            raise LRPError(f"block {i}: {type(mlp).__name__} is not timm's Mlp (fc1, act, fc2)")


def _block_forward(blk: nn.Module, x: torch.Tensor, rows: Optional[int] = None
                   ) -> Tuple[torch.Tensor, _BlockTape]:
    """timm ``Block.forward`` with unfused attention (:func:`models.forward.block_forward`),
    keeping the tape (graph kept for G_k).

    With ``rows``, only the first ``rows`` tokens are computed after the keys and values (the
    top block: only the pooled tokens reach the classifier); every per-token quantity of the tape
    except ``x_in``, ``h1``, ``k`` and ``v`` then has ``rows`` rows. One contiguous copy of q, k, v
    is made: every later product (forward, backward, relevance) reads them without copying again.
    """
    tape: dict = {}
    out = forward.block_forward(blk, x, tape=tape, rows=rows, contiguous=True)
    return out, _BlockTape(**tape)


@register("lrp", label="LRP", paper=True)
class TransformerAttribution(Explainer):
    """Transformer Attribution (Chefer et al. 2021), ``start_layer=0``; see the module docstring.

    Args:
        model: a timm ``VisionTransformer`` (pre-norm blocks, fused-qkv attention, class-token
            pooling or DeiT's distilled heads; any number of prefix tokens; layer scale allowed).
        final_norm_eps: ``"released"`` (default): the final norm uses ``eps=1e-5`` as in the
            released LRP model; ``"model"``: the model's own eps.
    """

    #: bf16 is refused: see :attr:`refusal`
    precisions = ("fp32", "tf32")
    refusal = ("its relevance rules divide by sums near zero, which bfloat16 rounding breaks "
               "(maps uncorrelated with float32's)")

    def __init__(self, model: nn.Module, final_norm_eps: str = "released",
                 precision: str = DEFAULT_PRECISION):
        super().__init__(model, precision)
        _check_supported(self.model)
        if final_norm_eps not in FINAL_NORM_EPS:
            raise ValueError(f"final_norm_eps must be one of {FINAL_NORM_EPS}, "
                             f"got {final_norm_eps!r}")
        self.final_norm_eps = final_norm_eps
        # id(linear) -> (its weight as split, that weight's version, (W+, W-)): see split()
        self._split_weights: Dict[int, Tuple[torch.Tensor, int, Tuple[torch.Tensor, ...]]] = {}

    def split(self, linear: nn.Linear) -> Tuple[torch.Tensor, torch.Tensor]:
        """:func:`split_weight` of ``linear.weight``, made once and kept while the weight is the
        same tensor with the same version counter (an in-place update, a new ``.data``, another
        device or dtype remake it; the kept reference holds its storage, so no other weight can
        take its address). Costs the weights' memory twice over; saves two passes over every
        weight per call, the larger share of the rules' memory traffic at small batches."""
        weight = linear.weight.detach()
        cached = self._split_weights.get(id(linear))
        if cached is None or cached[1] != weight._version or \
                cached[0].data_ptr() != weight.data_ptr() or cached[0].dtype != weight.dtype or \
                cached[0].shape != weight.shape or cached[0].device != weight.device:
            cached = (weight, weight._version, split_weight(weight))
            self._split_weights[id(linear)] = cached
        return cached[2]

    def final_norm(self, x: torch.Tensor) -> torch.Tensor:
        """The model's final norm, with the released ``eps=1e-5`` unless ``final_norm_eps="model"``
        (see the module docstring)."""
        norm = self.model.norm
        if self.final_norm_eps == "released" and isinstance(norm, nn.LayerNorm):
            return F.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias,
                                RELEASED_FINAL_NORM_EPS)
        return norm(x)

    # The steps, separately callable (tests compare the tape's logits with ``model(x)``).
    def forward_tape(self, images: torch.Tensor
                     ) -> Tuple[torch.Tensor, torch.Tensor, List[_BlockTape], List[torch.Tensor]]:
        """Forward pass with autograd on: ``(logits, final tokens, tapes, classifier inputs)``.

        The final tokens are only the pooled ones (class token, and DeiT's distillation token).
        """
        model = self.model
        with torch.no_grad():  # nothing below the first attention needs a gradient
            x = forward.embed(model, images)
        tapes = []
        pooled = forward.pooled_tokens(model)
        with torch.enable_grad():
            for depth, blk in enumerate(model.blocks):
                top = depth == len(model.blocks) - 1
                x, tape = _block_forward(blk, x, rows=pooled if top else None)
                tapes.append(tape)
            tokens = self.final_norm(x)
            logits, head_inputs = forward.head_forward(model, tokens)
        return logits, tokens, tapes, head_inputs

    def relevance(self, classes: torch.Tensor, tokens: torch.Tensor, tapes: List[_BlockTape],
                  head_inputs: List[torch.Tensor], logits: torch.Tensor) -> List[torch.Tensor]:
        """``R_k`` of every block (index 0 = first block), from one-hot(c): ``[B, H, N, N]``, the
        top block's ``[B, H, m, N]`` (the rows of its m pooled tokens; the other rows are 0)."""
        model = self.model
        one_hot = torch.zeros_like(logits).scatter_(1, classes[:, None], 1.0)
        heads = [model.head] if len(head_inputs) == 1 else [model.head, model.head_dist]
        if len(heads) == 1:
            head_relevance = [one_hot]
        else:  # distilled: (head + head_dist) / 2 as a sum of two halves
            halves = [h(x) / 2 for h, x in zip(heads, head_inputs)]
            head_relevance = list(residual_relevance(one_hot, *halves))
        R = torch.zeros_like(tokens)
        for index, (head, X, R_out) in enumerate(zip(heads, head_inputs, head_relevance)):
            R_pooled = linear_relevance(R_out, X, self.split(head))
            # fc_norm and head_drop pass relevance; pooling puts X0 * safe(R, X0) on its token.
            X0 = tokens[:, index]
            R[:, index] = X0 * safe_divide(R_pooled, X0)
        # The final norm passes relevance unchanged. Only the pooled tokens carry relevance into
        # the top block, whose tape has only their rows after the keys and values (its other rows
        # would receive exactly 0 from every token-wise rule up to the attention).
        relevances: List[Optional[torch.Tensor]] = [None] * len(tapes)
        for depth in range(len(tapes) - 1, -1, -1):
            blk, t = model.blocks[depth], tapes[depth]
            B, N, _ = t.x_in.shape
            M = t.x_mid.shape[1]                  # rows with relevance: N, or the pooled tokens
            H, d = blk.attn.num_heads, blk.attn.head_dim
            # second residual and the MLP (act, dropout, ls2, norms pass unchanged)
            R_skip, R_branch = residual_relevance(R, t.x_mid, t.mlp_branch, t.x_out)
            R_branch = linear_relevance(R_branch, t.fc2_in, self.split(blk.mlp.fc2))
            R_branch = linear_relevance(R_branch, t.h2, self.split(blk.mlp.fc1))
            R = branch_relevance(R_skip, R_branch, t.x_mid)
            # first residual and the attention output projection
            R_skip, R_branch = residual_relevance(R, t.x_in[:, :M], t.attn_branch, t.x_mid)
            R_branch = linear_relevance(R_branch, t.proj_in, self.split(blk.attn.proj))
            R_branch = R_branch.reshape(B, M, H, d).transpose(1, 2)    # b n (h d) -> b h n d
            # A @ V: z-rule on both operands, both halved
            S = safe_divide(R_branch, t.av)
            R_A = (S @ t.v.transpose(-2, -1)).mul_(t.attn).div_(2)     # [B, H, M, N]
            relevances[depth] = R_A
            if depth == 0:
                break  # nothing below the first attention is needed
            # [R_Q, R_K, R_V] are written straight into the qkv layout: b n (qkv h d)
            R_qkv = (t.h1.new_zeros if M < N else t.h1.new_empty)(B, N, 3, H, d)
            R_q, R_k, R_v = R_qkv.permute(2, 0, 3, 1, 4).unbind(0)      # [B, H, N, d] views
            torch.mul(t.attn.transpose(-2, -1) @ S, t.v, out=R_v).div_(2)
            # softmax and * scale pass R_A to the unscaled q @ k^T (kept from the forward)
            S = safe_divide(R_A, t.qk)
            torch.mul(S @ t.k, t.q, out=R_q[:, :, :M]).div_(2)
            torch.mul(S.transpose(-2, -1) @ t.q, t.k, out=R_k).div_(2)
            R_branch = linear_relevance(R_qkv.reshape(B, N, 3 * H * d), t.h1,
                                        self.split(blk.attn.qkv))
            if M < N:
                R_skip = torch.cat([R_skip, R_skip.new_zeros(B, N - M, R_skip.shape[2])], dim=1)
            R = branch_relevance(R_skip, R_branch, t.x_in)
        return relevances  # type: ignore[return-value]

    def _explain(self, images: torch.Tensor, targets: Optional[torch.Tensor]
                 ) -> Tuple[torch.Tensor, torch.Tensor]:
        logits, tokens, tapes, head_inputs = self.forward_tape(images)
        predictions, classes, score = class_scores(logits, targets)
        grads = torch.autograd.grad(score, [t.attn for t in tapes])     # G_k, [B, H, N, N] each
        with torch.no_grad():
            tapes = [_BlockTape(**{k: v.detach() for k, v in vars(t).items()}) for t in tapes]
            relevances = self.relevance(classes, tokens.detach(), tapes,
                                        [x.detach() for x in head_inputs], logits.detach())
            del tapes
            N = grads[0].shape[-1]
            eye = torch.eye(N, dtype=tokens.dtype, device=tokens.device)
            joint = None
            for G, R_k in zip(grads, relevances):
                abar = G.mul_(R_k).clamp_(min=0).mean(dim=1)            # [B, M, N]
                layer = eye.repeat(abar.shape[0], 1, 1)                 # Abar_k + I
                layer[:, :abar.shape[1]] += abar
                # C = (Abar_L + I) @ ... @ (Abar_1 + I), built in the released order
                joint = layer if joint is None else torch.bmm(layer, joint)
        return predictions.detach(), joint[:, 0, self.patch_columns()]
