"""``python -m agcam convert DIR --out model.pth``: a Hugging Face checkpoint as a timm checkpoint.

``DIR`` is a ``transformers`` checkpoint folder (``config.json`` with ``model.safetensors`` or
``pytorch_model.bin``, and ``preprocessor_config.json`` when it has one), or ``hf:<repo id>`` for
one on the hub. It is converted into the equal timm ViT (``models/transformers.py``: ViT, DeiT,
DINOv2 with or without registers, CLIP vision) and written to ``--out`` as one ``.pth``: weights,
constructor arguments, class names (``id2label``) and preprocessing. Every script then takes
``--checkpoint model.pth`` alone and needs no ``transformers``.

Before writing, the saved file is read back and its logits on a random batch are compared with
the converted model's: they must be equal (exit code 1 otherwise). Exit code 2 for a usage
error (no such folder, an unsupported family, no network for ``hf:``), reported in one line.
"""
from __future__ import annotations

import argparse
import os
import tempfile

from agcam.cli.common import add_out_arg, typed
from agcam.errors import UsageError

#: the dtypes ``--dtype`` offers (torch's names)
DTYPES = ("bfloat16", "float32", "float64")


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("source", metavar="DIR",
                        help="transformers checkpoint folder (config.json + model.safetensors or "
                             "pytorch_model.bin), or hf:<repo id>")
    add_out_arg(parser, "the timm checkpoint to write (.pth)", required=True, metavar="FILE")
    parser.add_argument("--dtype", default=None, choices=DTYPES,
                        help="dtype of the saved weights (default: the checkpoint's)")
    return parser


def main(args: argparse.Namespace) -> int:
    source = args.source
    if not source.startswith("hf:") and not os.path.isdir(source):
        raise UsageError(f"DIR {source}: no such folder (a transformers checkpoint folder or "
                         "hf:<repo id>)")
    import torch

    from models.transformers import load_timm_checkpoint, save_timm_checkpoint
    from models.vit import ModelError, create_model, model_geometry
    try:
        model = create_model(source) if source.startswith("hf:") else \
            create_model(checkpoint=source)
    except ModelError as exc:
        # the library names its argument as the scripts do (--checkpoint); here it is DIR
        raise UsageError(str(exc).replace(f"--checkpoint {source}", f"DIR {source}")) from None
    if args.dtype is not None:
        model = model.to(getattr(torch, args.dtype))
    out_dir = os.path.dirname(os.path.abspath(args.out))
    try:
        os.makedirs(out_dir, exist_ok=True)
        # written next to --out, then renamed: a failed check leaves no half-written file
        handle, tmp = tempfile.mkstemp(suffix=".pth", dir=out_dir)
        os.close(handle)
    except OSError as exc:
        raise UsageError(f"{typed(args, 'out')} {args.out}: cannot write there ({exc})") from None
    try:
        save_timm_checkpoint(model, tmp)
        reloaded = load_timm_checkpoint(tmp)
        geometry = model_geometry(model)
        dtype = next(model.parameters()).dtype
        x = torch.randn(2, 3, *geometry.input_size, generator=torch.Generator().manual_seed(0),
                        dtype=dtype)
        with torch.no_grad():
            same = torch.equal(model(x), reloaded(x))
        if not same:
            print(f"error: the saved checkpoint's logits differ from the converted model's; "
                  f"{args.out} not written", flush=True)
            return 1
        os.replace(tmp, args.out)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    cfg = model.pretrained_cfg
    names = getattr(model, "label_names", None)
    print(f"{cfg.get('architecture', type(model).__name__)} -> timm {type(model).__name__}: "
          f"{model.num_classes} classes ({'names from id2label' if names else 'no names'}), "
          f"input {geometry.input_size[0]}x{geometry.input_size[1]}, grid "
          f"{geometry.grid[0]}x{geometry.grid[1]}, {geometry.num_prefix_tokens} prefix token(s), "
          f"{dtype}", flush=True)
    print(f"preprocessing: {cfg['crop_mode']} crop_pct={cfg['crop_pct']:.4g} "
          f"{cfg['interpolation']} mean={tuple(round(m, 4) for m in cfg['mean'])} "
          f"std={tuple(round(s, 4) for s in cfg['std'])}", flush=True)
    print(f"wrote {args.out} (use: --checkpoint {args.out}); reloaded logits equal", flush=True)
    return 0
