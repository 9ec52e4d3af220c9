"""Class scores of a ViT without the work its head never reads.

A ViT whose head reads only the class token (``global_pool="token"``) uses nothing of the last
block's output but the class-token row, and that row needs only the class token's query (all
tokens' keys and values). :func:`class_token_logits` computes the last block for that row alone:
about 1/L less work for an L-block model, the same logits to float rounding.
Models it does not recognise run their own ``forward``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import Block, VisionTransformer
from torch import nn

from models.forward import (
    attention_residual,
    embed,
    final_norm,
    head_forward,
    is_timm_attention,
    mlp_residual,
    project_out,
    project_qkv,
)


def _supports_class_token_path(model: nn.Module) -> bool:
    if (type(model).forward is not VisionTransformer.forward
            or type(model).forward_head is not VisionTransformer.forward_head):
        return False
    if getattr(model, "global_pool", None) != "token" or getattr(model, "attn_pool", None):
        return False
    if getattr(model, "num_prefix_tokens", 1) < 1 or getattr(model, "cls_token", None) is None:
        return False
    last = model.blocks[-1] if len(model.blocks) else None
    if last is None or type(last).forward is not Block.forward:
        return False
    return is_timm_attention(last.attn)


def _last_block_class_row(blk: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """timm ``Block.forward`` restricted to the output row of token 0:
    ``[B, N, C] -> [B, 1, C]``."""
    attn = blk.attn
    h = blk.norm1(x)
    gate, q, k, v = project_qkv(attn, h, query_rows=1)
    out = project_out(attn, F.scaled_dot_product_attention(q, k, v, scale=attn.scale), gate)
    return mlp_residual(blk, attention_residual(blk, x[:, :1], out))


def class_token_logits(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """``model(images)`` in eval mode, with the last block computed for the class token only."""
    if model.training or not _supports_class_token_path(model):
        return model(images)
    x = embed(model, images)
    for blk in model.blocks[:-1]:
        x = blk(x)
    return head_forward(model, final_norm(model, _last_block_class_row(model.blocks[-1], x)))[0]
