"""timm's ``VisionTransformer`` forward, written out once, in pieces every path here composes.

The attention recorder (:mod:`models.attention`), the class-token inference path
(:mod:`models.inference`), Chefer's LRP and the LRP-style methods of ``baselines/`` need the
forward's intermediates or a variant of it (unfused attention, some rows only, a replaced
operation). They all build it from the functions below, so a timm upgrade touches this file only.
Written for timm 1.0.x (:func:`check_timm_version`); ``tests/test_forward.py`` checks
:func:`forward` against timm's own ``model(x)`` for every model variant the project supports.

The pieces follow timm 1.0's ``VisionTransformer.forward_features`` / ``forward_head``,
``Block.forward``, ``Attention.forward`` and ``Mlp.forward``, with one documented difference:
the attention scores are ``(q @ k^T) * scale`` (the released AGCAM and LRP order) where timm
scales ``q`` first; the two are equal up to float rounding.

Shapes: ``B`` images, ``N`` tokens (prefix tokens first, then the patch grid), ``C`` channels,
``H`` heads of width ``d``.

:class:`Ops` names the operations a method may replace (LayerNorm, the MLP activation, softmax and
the two attention products), the way AttnLRP changes their gradients; the default is timm's own.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional, Tuple

import timm
import torch
import torch.nn.functional as F
from torch import nn

try:  # present in timm >= 1.0.20; older releases take no mask in the ViT path
    from timm.layers.attention import maybe_add_mask, resolve_self_attn_mask
except ImportError:  # pragma: no cover - depends on the installed timm
    maybe_add_mask = resolve_self_attn_mask = None

#: the timm releases (major, minor) this forward was written for and is tested against
SUPPORTED_TIMM = ((1, 0),)

Tape = Optional[Dict[str, torch.Tensor]]


class ForwardError(RuntimeError):
    """The model has a part the written-out forward does not know, or timm is another release."""


def check_timm_version(version: str = timm.__version__) -> None:
    """``ForwardError`` unless ``version`` is a timm release this forward was written for."""
    try:
        major_minor = tuple(int(p) for p in version.split(".")[:2])
    except ValueError:
        major_minor = None
    if major_minor not in SUPPORTED_TIMM:
        supported = ", ".join(f"{a}.{b}.x" for a, b in SUPPORTED_TIMM)
        raise ForwardError(f"timm {version}: the written-out ViT forward (models/forward.py) was "
                           f"written for timm {supported}; install timm==1.0.31 "
                           "(requirements.txt) or update models/forward.py")


check_timm_version()


class Ops:
    """The operations of the forward that a method may replace; these are timm's own."""

    def norm(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """A LayerNorm (``norm1``, ``norm2``, the final ``norm``, ``fc_norm``)."""
        return module(x)

    def act(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """The MLP's activation (GELU for ViT)."""
        return module(x)

    def softmax(self, scores: torch.Tensor) -> torch.Tensor:
        """The attention's softmax over keys."""
        return scores.softmax(dim=-1)

    def matmul(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """The attention's two products, ``q @ k^T`` and ``A @ v``."""
        return a @ b


PLAIN = Ops()


def is_timm_attention(module: nn.Module) -> bool:
    """Whether ``module`` is timm's ``Attention`` kind: a fused ``qkv`` linear, ``proj``,
    ``num_heads``, ``head_dim`` and ``scale`` (what every path here reads)."""
    return all(hasattr(module, name) for name in ("qkv", "proj", "num_heads", "head_dim", "scale"))


# -- embedding ------------------------------------------------------------------------------------
def embed(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """``[B, 3, H, W] -> [B, N, C]``: patch embedding, prefix tokens and position embedding, patch
    dropout and the pre-norm (``forward_features`` up to the blocks)."""
    x = model.patch_embed(images)
    x = model._pos_embed(x)
    x = model.patch_drop(x)
    return model.norm_pre(x)


# -- attention ------------------------------------------------------------------------------------
def project_qkv(attn: nn.Module, x: torch.Tensor, query_rows: Optional[int] = None,
                contiguous: bool = False):
    """``(gate, q, k, v)`` as timm's ``Attention.forward`` makes them: q, k, v ``[B, H, N, d]``
    (q and k through ``q_norm``/``k_norm``), the gate ``[B, N, H*d]`` or ``None``.

    ``query_rows=m`` computes the queries (and the gate) of the first ``m`` tokens only, from the
    query third of the ``qkv`` weight: the same values, less work, for a forward whose output is
    read on those rows only. ``contiguous`` makes one contiguous copy of q, k, v first (later
    products read them without copying again).
    """
    B, N, _ = x.shape
    H, d = attn.num_heads, attn.head_dim
    if query_rows is None:
        gate = attn.gate(x).sigmoid() if getattr(attn, "gate", None) is not None else None
        qkv = attn.qkv(x).reshape(B, N, 3, H, d).permute(2, 0, 3, 1, 4)
        q, k, v = (qkv.contiguous() if contiguous else qkv).unbind(0)
    else:
        dim = H * d
        weight, bias = attn.qkv.weight, attn.qkv.bias
        rows = x[:, :query_rows]
        q = F.linear(rows, weight[:dim], None if bias is None else bias[:dim])
        kv = F.linear(x, weight[dim:], None if bias is None else bias[dim:])
        q = q.reshape(B, query_rows, H, d).transpose(1, 2)
        k, v = kv.reshape(B, N, 2, H, d).permute(2, 0, 3, 1, 4).unbind(0)
        gate = attn.gate(rows).sigmoid() if getattr(attn, "gate", None) is not None else None
    return gate, attn.q_norm(q), attn.k_norm(k), v


def add_mask(scores: torch.Tensor, attn_mask: Optional[torch.Tensor] = None,
             is_causal: bool = False) -> torch.Tensor:
    """timm's attention mask (or causal mask) added to ``[B, H, R, N]`` scores."""
    if attn_mask is None and not is_causal:
        return scores
    if resolve_self_attn_mask is None:
        raise ForwardError("this timm has no attention-mask support")
    return maybe_add_mask(scores, resolve_self_attn_mask(scores.shape[-1], scores, attn_mask,
                                                         is_causal))


def attention_scores(attn: nn.Module, q: torch.Tensor, k: torch.Tensor,
                     attn_mask: Optional[torch.Tensor] = None, is_causal: bool = False,
                     ops: Ops = PLAIN, tape: Tape = None) -> torch.Tensor:
    """Pre-softmax scores ``S = (q @ k^T) * scale`` (+ mask), ``[B, H, R, N]``; the tape keeps the
    unscaled ``qk``."""
    qk = ops.matmul(q, k.transpose(-2, -1))
    if tape is not None:
        tape["qk"] = qk
    return add_mask(qk * attn.scale, attn_mask, is_causal)


def project_out(attn: nn.Module, heads: torch.Tensor, gate: Optional[torch.Tensor],
                tape: Tape = None) -> torch.Tensor:
    """The rest of timm's ``Attention.forward`` for some rows: ``[B, H, R, d]`` head outputs
    (and the gate's matching rows) -> ``[B, R, C]``."""
    B, _, R, _ = heads.shape
    out = heads.transpose(1, 2).reshape(B, R, -1)
    out = attn.norm(out) if hasattr(attn, "norm") else out
    if gate is not None:
        out = out * gate
    if tape is not None:
        tape["proj_in"] = out
    return attn.proj_drop(attn.proj(out))


def attention_forward(attn: nn.Module, x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None,
                      is_causal: bool = False, ops: Ops = PLAIN, tape: Tape = None,
                      rows: Optional[int] = None, contiguous: bool = False) -> torch.Tensor:
    """timm's ``Attention.forward`` unfused: ``[B, N, C] -> [B, R, C]`` (``R = rows`` or ``N``).

    With ``rows``, only the first ``rows`` queries are computed after the keys and values. The
    tape (a dict) receives ``q, k, v, qk, attn, av, proj_in``.
    """
    gate, q, k, v = project_qkv(attn, x, contiguous=contiguous)
    if rows is not None:
        q = q[:, :, :rows]
        gate = None if gate is None else gate[:, :rows]
    scores = attention_scores(attn, q, k, attn_mask, is_causal, ops, tape)
    probs = attn.attn_drop(ops.softmax(scores))
    av = ops.matmul(probs, v)
    if tape is not None:
        tape.update(q=q, k=k, v=v, attn=probs, av=av)
    return project_out(attn, av, gate, tape)


# -- MLP and block --------------------------------------------------------------------------------
def mlp_hidden(mlp: nn.Module, x: torch.Tensor, ops: Ops = PLAIN) -> torch.Tensor:
    """timm's ``Mlp`` (``fc1, act, drop1, norm``) or ``GluMlp``/SwiGLU-packed (``fc1`` then
    ``act(x1) * x2``) up to the input of ``fc2``."""
    h = mlp.fc1(x)
    if getattr(mlp, "chunk_dim", None) is not None:      # GluMlp: gated halves of fc1
        x1, x2 = h.chunk(2, dim=mlp.chunk_dim)
        h = ops.act(mlp.act, x1) * x2
    else:
        h = ops.act(mlp.act, h)
    return mlp.norm(mlp.drop1(h))


def mlp_forward(mlp: nn.Module, x: torch.Tensor, ops: Ops = PLAIN, tape: Tape = None
                ) -> torch.Tensor:
    """The block's MLP, written out for timm's ``Mlp`` and ``GluMlp``; another MLP runs its own
    forward (then ``ops.act`` is not applied)."""
    if not all(hasattr(mlp, n) for n in ("fc1", "act", "drop1", "norm", "fc2", "drop2")):
        return mlp(x)
    hidden = mlp_hidden(mlp, x, ops)
    if tape is not None:
        tape["fc2_in"] = hidden
    return mlp.drop2(mlp.fc2(hidden))


def check_block(blk: nn.Module, index: int = 0) -> None:
    """``ForwardError`` unless ``blk`` is timm's pre-norm ``Block`` kind."""
    missing = [n for n in ("norm1", "attn", "ls1", "drop_path1", "norm2", "mlp", "ls2",
                           "drop_path2") if not hasattr(blk, n)]
    if missing:
        raise ForwardError(f"block {index} ({type(blk).__name__}) lacks {missing}: not timm's "
                           "pre-norm Block")
    if not is_timm_attention(blk.attn):
        raise ForwardError(f"block {index}: {type(blk.attn).__name__} is not a timm Attention "
                           "with a fused qkv")


def attention_residual(blk: nn.Module, x: torch.Tensor, out: torch.Tensor, tape: Tape = None
                       ) -> torch.Tensor:
    """``x + drop_path1(ls1(out))``: the block's first residual for the rows of ``x``."""
    branch = blk.drop_path1(blk.ls1(out))
    if tape is not None:
        tape["attn_branch"] = branch
    return x + branch


def mlp_residual(blk: nn.Module, x: torch.Tensor, ops: Ops = PLAIN, tape: Tape = None
                 ) -> torch.Tensor:
    """``x + drop_path2(ls2(mlp(norm2(x))))``: the block's second residual."""
    h2 = ops.norm(blk.norm2, x)
    branch = blk.drop_path2(blk.ls2(mlp_forward(blk.mlp, h2, ops, tape)))
    if tape is not None:
        tape.update(x_mid=x, h2=h2, mlp_branch=branch)
    out = x + branch
    if tape is not None:
        tape["x_out"] = out
    return out


def block_forward(blk: nn.Module, x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None,
                  is_causal: bool = False, ops: Ops = PLAIN, tape: Tape = None,
                  rows: Optional[int] = None, contiguous: bool = False) -> torch.Tensor:
    """timm's ``Block.forward`` with the attention unfused: ``[B, N, C] -> [B, R, C]``.

    With ``rows``, only the first ``rows`` tokens are computed after the keys and values (a top
    block whose other rows nothing reads). The tape receives ``x_in, h1`` and the attention's,
    residuals' and MLP's intermediates (:func:`attention_forward`, :func:`mlp_residual`).
    """
    h1 = ops.norm(blk.norm1, x)
    if tape is not None:
        tape.update(x_in=x, h1=h1)
    out = attention_forward(blk.attn, h1, attn_mask, is_causal, ops, tape, rows, contiguous)
    kept = x if rows is None else x[:, :rows]
    return mlp_residual(blk, attention_residual(blk, kept, out, tape), ops, tape)


# -- head -----------------------------------------------------------------------------------------
def pooled_tokens(model: nn.Module) -> int:
    """How many leading tokens the head reads: 2 for DeiT's distilled heads, else 1 (class-token
    pooling; other poolings read every token, see :func:`head_forward`)."""
    return 2 if getattr(model, "head_dist", None) is not None else 1


def head_forward(model: nn.Module, tokens: torch.Tensor, ops: Ops = PLAIN
                 ) -> Tuple[torch.Tensor, List[torch.Tensor]]:
    """timm's ``forward_head`` (eval mode) on the final-norm tokens: ``(logits, head inputs)``,
    one head input per linear head (DeiT's distilled model averages two heads)."""
    if getattr(model, "head_dist", None) is not None:
        x_cls, x_dist = model.head_drop(tokens[:, 0]), model.head_drop(tokens[:, 1])
        return (model.head(x_cls) + model.head_dist(x_dist)) / 2, [x_cls, x_dist]
    pooled = model.pool(tokens) if hasattr(model, "pool") else tokens[:, 0]
    fc_norm = model.fc_norm
    pooled = model.head_drop(pooled if isinstance(fc_norm, nn.Identity)
                             else ops.norm(fc_norm, pooled))
    return model.head(pooled), [pooled]


def final_norm(model: nn.Module, x: torch.Tensor, ops: Ops = PLAIN) -> torch.Tensor:
    return ops.norm(model.norm, x)


def forward(model: nn.Module, images: torch.Tensor, ops: Ops = PLAIN,
            block: Optional[Callable[[nn.Module, torch.Tensor], torch.Tensor]] = None,
            tapes: Optional[List[Dict[str, torch.Tensor]]] = None) -> torch.Tensor:
    """``model(images)`` in eval mode, written out: embedding, every block (:func:`block_forward`
    unless ``block`` is given), the final norm and the head. ``tapes`` (a list) receives one tape
    per block."""
    x = embed(model, images)
    for blk in model.blocks:
        if block is not None:
            x = block(blk, x)
        else:
            tape = None if tapes is None else {}
            x = block_forward(blk, x, ops=ops, tape=tape)
            if tapes is not None:
                tapes.append(tape)
    return head_forward(model, final_norm(model, x, ops), ops)[0]
