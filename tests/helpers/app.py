"""Files the page's tests feed it (tests/test_app.py, tests/test_app_browser.py): an image
header with no pixels, and a checkpoint that a method refuses."""
from __future__ import annotations

import struct
import zlib

import torch


def header_only_png(path, width: int, height: int) -> str:
    """A PNG whose header says ``width`` x ``height`` and that holds no pixel data: anything
    that decodes it fails, so a refusal naming its size proves the header alone was read."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + \
            struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    with open(path, "wb") as handle:
        handle.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))
    return str(path)


def avg_pool_checkpoint(path) -> str:
    """A tiny ViT with a class token but average pooling, as an ``agcam convert`` file: LRP
    refuses it (it needs class-token pooling), AGCAM explains it."""
    from models.transformers import build_timm_vit, save_timm_checkpoint
    args = dict(head="avg", img_size=[32, 32], patch_size=[16, 16], num_classes=3, embed_dim=16,
                depth=1, num_heads=2, qkv_bias=True, init_values=None, reg_tokens=0,
                no_embed_class=False, pre_norm=False, eps=1e-6, act="gelu", mlp_hidden=32,
                swiglu=False)
    torch.manual_seed(0)
    model = build_timm_vit(args)
    for parameter in model.parameters():
        torch.nn.init.normal_(parameter, std=0.02)
    model.timm_args = args
    model.pretrained_cfg = dict(input_size=(3, 32, 32), mean=(0.5,) * 3, std=(0.5,) * 3)
    model.label_names = None
    save_timm_checkpoint(model, str(path))
    return str(path)
