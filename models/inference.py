"""Class scores of a ViT without the work its head never reads.

A ViT whose head reads only the class token (``global_pool="token"``) uses nothing of the last
block's output but the class-token row, and that row needs only the class token's query (all
tokens' keys and values). :func:`class_token_logits` computes the last block for that row alone:
about 1/L less work for an L-block model (7% for ViT-B/16), the same logits to float rounding.
Models it does not recognise run their own ``forward``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import Block, VisionTransformer
from torch import nn

from models.attention import is_timm_attention, project_out


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
    """timm ``Block.forward`` restricted to the output row of token 0: ``[B, N, C] -> [B, 1, C]``."""
    attn = blk.attn
    B, N, _ = x.shape
    h = blk.norm1(x)
    dim = attn.num_heads * attn.head_dim
    weight, bias = attn.qkv.weight, attn.qkv.bias
    q = F.linear(h[:, :1], weight[:dim], None if bias is None else bias[:dim])
    kv = F.linear(h, weight[dim:], None if bias is None else bias[dim:])
    q = q.reshape(B, 1, attn.num_heads, attn.head_dim).transpose(1, 2)
    k, v = kv.reshape(B, N, 2, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
    q, k = attn.q_norm(q), attn.k_norm(k)
    gate = attn.gate(h[:, :1]).sigmoid() if getattr(attn, "gate", None) is not None else None
    out = project_out(attn, F.scaled_dot_product_attention(q, k, v, scale=attn.scale), gate)
    row = x[:, :1] + blk.drop_path1(blk.ls1(out))
    return row + blk.drop_path2(blk.ls2(blk.mlp(blk.norm2(row))))


def class_token_logits(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """``model(images)`` in eval mode, with the last block computed for the class token only."""
    if model.training or not _supports_class_token_path(model):
        return model(images)
    x = model.patch_embed(images)
    x = model._pos_embed(x)
    x = model.patch_drop(x)
    x = model.norm_pre(x)
    for blk in model.blocks[:-1]:
        x = blk(x)
    x = model.norm(_last_block_class_row(model.blocks[-1], x))
    return model.forward_head(x)
