"""Record the self-attention of every block of a timm Vision Transformer.

timm's ``Attention`` uses ``F.scaled_dot_product_attention`` when fusion is on, which never builds
the attention matrix, so a hook cannot see it. :class:`AttentionRecorder` therefore replaces the
``forward`` of each block's attention module by an unfused one that records

* the pre-softmax scores ``S = (q @ k^T) * scale`` (AGCAM's Eq. 4 input),
* the post-softmax probabilities ``A = softmax(S)``,
* optionally a tensor whose gradient is ``d score / dA``,

for the duration of a ``with`` block only. On exit the original ``forward`` and ``fused_attn`` flag
of every module are restored: no hook, patched method or tensor stays on the model.

Shapes: ``B`` images, ``H`` heads, ``N`` tokens (prefix tokens first, then the patch grid).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import Block
from torch import nn

from models.forward import (
    attention_residual,
    attention_scores,
    is_timm_attention,
    mlp_residual,
    project_out,
    project_qkv,
)


class AttentionRecordingError(RuntimeError):
    """The model's attention could not be recorded (unsupported module or nothing recorded)."""


@dataclass
class AttentionRecord:
    """What one block's attention recorded during one forward pass.

    ``scores`` and ``probs`` are ``[B, H, R, N]`` where ``R`` is ``N`` (all query rows) or 1
    (only the
    class-token row, ``rows="cls"``). ``grad_tensor`` is the tensor to differentiate the class score
    with respect to to obtain ``dy/dA`` on those rows (``None`` when gradients were not asked for).
    """

    scores: Optional[torch.Tensor] = None
    probs: Optional[torch.Tensor] = None
    grad_tensor: Optional[torch.Tensor] = None


@dataclass
class AttentionRecorder:
    """Context manager that makes every block's self-attention observable.

    Args:
        model: a timm ``VisionTransformer`` (anything with ``blocks[i].attn`` of timm's
            ``Attention`` kind: a fused ``qkv`` linear, ``num_heads``, ``head_dim``, ``scale``).
        detach_input: start each attention's forward with ``x = x.detach()``, as the AGCAM authors'
            model does, so the class score reaches each attention only through the skip connections
            (the paper's ``dE1^(k+1)/dE2^k = I``). Only AGCAM uses this.
        rows: ``"all"`` records every query row; ``"cls"`` only the class-token row (index 0),
            which is all AGCAM needs and saves memory.
        keep_scores: record the pre-softmax scores.
        keep_probs: record the post-softmax probabilities.
        grad: make ``dy/dA`` available through ``AttentionRecord.grad_tensor``.
        blocks: indices into ``model.blocks`` (negative from the end) whose attention is
            recorded, in that order; ``None`` records every block. The other blocks keep timm's
            own (fused) attention. Records follow the order given (``[-1]``: the last block).

    With ``detach_input=True`` nothing inside an attention module needs a gradient except ``A``
    itself, so the q/k/v projections run without building a graph and (for ``rows="cls"``) only the
    class-token row of ``A`` becomes a leaf; the values are identical, the backward pass is cheaper.

    Class-token fast path (``detach_input=True, rows="cls", grad=True``, AGCAM's setting): with
    every attention input cut, tokens never mix along a gradient path (skip connections, LayerNorm
    and MLP act per token), so ``dy/dA[cls]`` only depends on the class token's own residual chain.
    The recorder then also patches each block of timm's plain ``Block`` kind so that only the
    class-token row carries a graph through the MLP and projection, while the other rows run under
    ``no_grad`` with timm's fused attention. The forward values are the model's (to float
    rounding) and the gradient of the class-token row is unchanged; the backward pass shrinks
    from N tokens to one.
    """

    model: nn.Module
    detach_input: bool = False
    rows: str = "all"
    keep_scores: bool = True
    keep_probs: bool = True
    grad: bool = False
    blocks: Optional[Sequence[int]] = None
    records: List[Optional[AttentionRecord]] = field(default_factory=list, init=False)
    _saved: list = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.rows not in ("all", "cls"):
            raise ValueError(f"rows must be 'all' or 'cls', got {self.rows!r}")
        if self.rows == "cls" and self.grad and not self.detach_input:
            # Without the cut, A's other rows carry gradient to the input: keep the full matrix.
            raise ValueError("rows='cls' with grad=True needs detach_input=True")
        self.cls_fast_path = self.detach_input and self.rows == "cls" and self.grad
        if self.cls_fast_path and self.blocks is not None:
            # The fast path is exact only when every attention input is cut.
            raise ValueError("the class-token fast path records every block (blocks=None)")

    # -- context manager -------------------------------------------------------------------------
    def attention_modules(self) -> List[nn.Module]:
        blocks = getattr(self.model, "blocks", None)
        if blocks is None or len(blocks) == 0:
            raise AttentionRecordingError(
                f"{type(self.model).__name__} has no transformer `blocks`; "
                "AGCAM needs a timm Vision Transformer")
        modules = []
        for i, blk in enumerate(blocks):
            attn = getattr(blk, "attn", None)
            if attn is None or not is_timm_attention(attn):
                raise AttentionRecordingError(
                    f"block {i}: attention module {type(attn).__name__} is not a timm Attention "
                    "(needs qkv, proj, num_heads, head_dim, scale); cannot record attention")
            modules.append(attn)
        if self.blocks is not None:
            try:
                modules = [modules[i] for i in self.blocks]
            except IndexError:
                raise AttentionRecordingError(
                    f"blocks {list(self.blocks)}: the model has {len(modules)} blocks") from None
        return modules

    def __enter__(self) -> "AttentionRecorder":
        modules = self.attention_modules()
        self.records = [None] * len(modules)
        try:
            for index, module in enumerate(modules):
                had_instance_forward = "forward" in module.__dict__
                self._saved.append((module, getattr(module, "fused_attn", None),
                                    module.__dict__.get("forward"), had_instance_forward))
                if hasattr(module, "fused_attn"):
                    module.fused_attn = False
                module.forward = self._make_forward(module, index)
            if self.cls_fast_path:
                for blk, module in zip(self.model.blocks, modules):
                    if type(blk).forward is Block.forward:
                        self._saved.append((blk, None, blk.__dict__.get("forward"),
                                            "forward" in blk.__dict__))
                        blk.forward = _make_cls_block_forward(blk, module.forward.parts)
        except BaseException:
            self._restore()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self._restore()

    def _restore(self) -> None:
        for module, fused, forward, had_instance_forward in reversed(self._saved):
            if had_instance_forward:
                module.forward = forward
            else:
                module.__dict__.pop("forward", None)
            if fused is not None:
                module.fused_attn = fused
        self._saved.clear()

    # -- results ---------------------------------------------------------------------------------
    def checked_records(self) -> List[AttentionRecord]:
        """The records of the last forward pass; raises if any block recorded nothing."""
        missing = [i for i, r in enumerate(self.records) if r is None]
        if not self.records or missing:
            raise AttentionRecordingError(
                f"no attention was recorded for block(s) {missing or 'all'}: the model's forward "
                "did not call the blocks' attention modules while recording")
        return self.records  # type: ignore[return-value]

    def stacked(self, what: str) -> torch.Tensor:
        """``[B, L, H, R, N]``: one recorded quantity (``scores`` or ``probs``) of every block."""
        return torch.stack([getattr(r, what) for r in self.checked_records()], dim=1)

    def gradients(self, score: torch.Tensor, retain_graph: bool = False) -> torch.Tensor:
        """``[B, L, H, R, N]``: ``d score / dA`` for every block (``score`` a scalar)."""
        return torch.stack(self.gradient_list(score, retain_graph), dim=1)

    def gradient_list(self, score: torch.Tensor, retain_graph: bool = False
                      ) -> List[torch.Tensor]:
        """``d score / dA`` per recorded block, ``[B, H, R, N]`` each (no stacked copy)."""
        records = self.checked_records()
        if not self.grad:
            raise AttentionRecordingError("gradients were not requested (grad=False)")
        tensors = [r.grad_tensor for r in records]
        grads = torch.autograd.grad(score, tensors, retain_graph=retain_graph, allow_unused=True)
        return [torch.zeros_like(t) if g is None else g for g, t in zip(grads, tensors)]

    # -- the unfused attention -------------------------------------------------------------------
    def _make_forward(self, module: nn.Module, index: int):
        recorder = self

        def parts(x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None,
                  is_causal: bool = False):
            """Class-token fast path: the class row's and the other rows' outputs apart."""
            return _cls_fast_attention(module, x.detach(), attn_mask, is_causal,
                                       recorder.records, index, recorder.keep_scores,
                                       recorder.keep_probs)

        def forward(x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None,
                    is_causal: bool = False) -> torch.Tensor:
            if recorder.cls_fast_path:
                return torch.cat(parts(x, attn_mask, is_causal), dim=1)
            if recorder.detach_input:
                x = x.detach()
            cut = recorder.detach_input and recorder.grad
            # With the input cut, q, k, v (and the gate) need no graph: only A does.
            with torch.no_grad() if cut else contextlib.nullcontext():
                gate, q, k, v = project_qkv(module, x)
                # Released AGCAM order: (q @ k^T) * scale (timm scales q first; equal to rounding).
                scores = attention_scores(module, q, k, attn_mask, is_causal)
                probs = scores.softmax(dim=-1)

            record = AttentionRecord()
            row = slice(0, 1) if recorder.rows == "cls" else slice(None)
            if recorder.keep_scores:
                record.scores = scores[:, :, row]
            if recorder.keep_probs:
                record.probs = probs[:, :, row]
            if cut:
                # Leaf for dy/dA on the recorded rows; the other rows stay constants.
                # (rows == "all" here: the class-row case takes the fast path above.)
                probs = probs.detach().requires_grad_(True)
                record.grad_tensor = probs
            elif recorder.grad:
                record.grad_tensor = probs
            recorder.records[index] = record

            return project_out(module, module.attn_drop(probs) @ v, gate)

        forward.parts = parts
        return forward


def _cls_fast_attention(module: nn.Module, x: torch.Tensor, attn_mask, is_causal: bool,
                        records: list, index: int, keep_scores: bool,
                        keep_probs: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    """Attention whose only graph is the class-token row: ``proj(A[cls] @ v)`` with ``A[cls]`` a
    leaf. The other rows are constants under the gradient cut and use timm's fused kernel.
    Returns the outputs of the class row ``[B, 1, C]`` and of the other rows ``[B, N-1, C]``
    apart (the block adds each to its own residual rows: no concatenated copy)."""
    with torch.no_grad():
        gate, q, k, v = project_qkv(module, x)
        scores = attention_scores(module, q[:, :, :1], k)                  # [B, H, 1, N]
        if attn_mask is None and not is_causal:
            rest = F.scaled_dot_product_attention(q[:, :, 1:], k, v, scale=module.scale)
        else:
            full = attention_scores(module, q, k, attn_mask, is_causal)
            scores = full[:, :, :1]
            rest = full[:, :, 1:].softmax(dim=-1) @ v
        probs = scores.softmax(dim=-1)
    leaf = probs.detach().requires_grad_(True)
    records[index] = AttentionRecord(scores=scores if keep_scores else None,
                                     probs=probs if keep_probs else None, grad_tensor=leaf)

    cls_out = project_out(module, module.attn_drop(leaf) @ v, None if gate is None else gate[:, :1])
    with torch.no_grad():
        rest_out = project_out(module, rest, None if gate is None else gate[:, 1:])
    return cls_out, rest_out


def _make_cls_block_forward(blk: nn.Module, attention_parts):
    """timm ``Block.forward`` with only the class-token row carrying a graph (see the recorder's
    class-token fast path); ``attention_parts`` is the recorder's attention returning the class
    row's and the other rows' outputs apart.

    The class row and the other rows go through the residual adds, ``norm2`` and the MLP apart
    and meet once, in the block's output: every value is the same float operation on the same
    operands as in ``x + attn(...)`` then ``x[:, :1]`` / ``x[:, 1:]`` (element-wise adds, per
    token LayerNorm and MLP on the same row sets), without the copies of a concatenated
    attention output and of a strided slice.
    """

    def forward(x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None,
                is_causal: bool = False) -> torch.Tensor:
        with torch.no_grad():
            h = blk.norm1(x.detach())               # the attention cuts its input anyway
        cls_attn, rest_attn = attention_parts(h, attn_mask, is_causal)
        cls = mlp_residual(blk, attention_residual(blk, x[:, :1], cls_attn))
        with torch.no_grad():
            rest = mlp_residual(blk, attention_residual(blk, x[:, 1:], rest_attn))
        return torch.cat([cls, rest], dim=1)

    return forward
