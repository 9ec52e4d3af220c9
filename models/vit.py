"""Create a timm Vision Transformer with the paper's weights or a local checkpoint.

Everything geometric (input size, patch grid, prefix tokens, mean/std) is read from the model;
nothing here assumes 224 px, 16 px patches or one class token.
"""
from __future__ import annotations

import hashlib
import os
import socket
import threading
import urllib.parse
from dataclasses import dataclass
from typing import Optional, Tuple

import timm
import torch
from PIL import Image
from timm.data import create_transform
from timm.models import clean_state_dict, generate_default_cfgs, register_model
from timm.models.vision_transformer import (
    VisionTransformer,
    _cfg,
    _create_vision_transformer,
    checkpoint_filter_fn,
)
from torch import nn

from models.transformers import (
    ConversionError,
    from_pretrained,
    from_transformers,
    is_timm_checkpoint,
    model_from_timm_checkpoint,
)

#: The weights the paper used (``jx_vit_base_p16_224-80ecf9dd.pth``), as current timm names them.
DEFAULT_MODEL = "vit_base_patch16_224.orig_in21k_ft_in1k"


class ModelError(ValueError):
    """The model cannot be created or its weights cannot be loaded (a user error, exit code 2)."""


class WeightsUnavailableError(ModelError):
    """Pretrained weights could not be obtained (no network and no ``--checkpoint``)."""


# Pretrained cfg of the fixture model: no weights to download, the paper's 0.5 mean/std.
default_cfgs = generate_default_cfgs({
    "vit_agcam_tiny_patch16_224": _cfg(url="", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
                                       num_classes=1000),
})


@register_model
def vit_agcam_tiny_patch16_224(pretrained: bool = False, **kwargs) -> VisionTransformer:
    """The small ViT of the reference fixtures (embed 96, depth 4, heads 3, patch 16, 224 px).

    Registered on top of timm's class (not copied) so tests and scripts can name it like any
    other timm model: ``--model vit_agcam_tiny_patch16_224 --checkpoint weights.pth``.
    """
    if pretrained:
        raise ModelError("vit_agcam_tiny_patch16_224 has no pretrained weights; pass --checkpoint")
    args = dict(img_size=224, patch_size=16, embed_dim=96, depth=4, num_heads=3, mlp_ratio=4.0,
                qkv_bias=True)
    return _create_vision_transformer("vit_agcam_tiny_patch16_224", pretrained=False,
                                      **dict(args, **kwargs))


def _unwrap_state_dict(obj, path: str) -> dict:
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "model_state_dict", "state_dict_ema"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelError(f"{path}: not a state dict of tensors")
    # DataParallel / DDP / torch.compile prefixes ('module.', '_orig_mod.'), as timm removes them.
    return clean_state_dict(obj)


def read_state_dict(path: str) -> dict:
    """Read a plain state dict from ``.pth``/``.pt``/``.bin`` (weights only) or ``.safetensors``."""
    return _unwrap_state_dict(read_checkpoint_file(path), path)


def read_checkpoint_file(path: str):
    """The object stored in a checkpoint file (``torch.load(weights_only=True)`` or
    safetensors), not yet unwrapped."""
    if not os.path.isfile(path):
        raise ModelError(f"--checkpoint {path}: no such file")
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file
            obj = load_file(path, device="cpu")
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a corrupt or foreign file
        raise ModelError(f"--checkpoint {path}: {_unreadable_reason(path, exc)}; pass a .pth/"
                         ".pt/.bin state dict, a .safetensors file or a transformers checkpoint "
                         "folder") from None
    return obj


def _unreadable_reason(path: str, exc: Exception) -> str:
    """Why ``torch.load`` or safetensors refused ``path``, in words (the raw error of a text
    file is ``KeyError: 101``, the letter ``e``)."""
    with open(path, "rb") as handle:
        head = handle.read(4)
    if not path.endswith(".safetensors") and not head.startswith(b"PK") and \
            not head.startswith(b"\x80"):
        return "not a checkpoint (neither the zip archive torch.save writes nor a pickle)"
    return f"cannot be read as a state dict ({type(exc).__name__}: {exc})"


def head_classes(state_dict: dict, classifier: str = "head") -> Optional[int]:
    """The number of classes of a checkpoint's head (``<classifier>.weight`` rows), if it has
    one."""
    weight = state_dict.get(f"{classifier}.weight")
    return int(weight.shape[0]) if weight is not None and weight.ndim == 2 else None


def load_checkpoint(model: nn.Module, path: str, state_dict: Optional[dict] = None) -> None:
    """Load a local checkpoint into ``model`` (strict: every key must match)."""
    state_dict = read_state_dict(path) if state_dict is None else state_dict
    if isinstance(model, VisionTransformer):
        # timm's own conversion of older ViT checkpoints (e.g. the 0.6.12-era jx file).
        try:
            state_dict = checkpoint_filter_fn(state_dict, model)
        except Exception as exc:
            raise ModelError(f"--checkpoint {path}: does not fit this model ({exc})") from None
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()
        raise ModelError(f"--checkpoint {path}: does not fit the model: "
                         f"{' '.join(first[:3])[:600]}") from None


def file_digest(path: str) -> str:
    """SHA-256 of a file (recorded in output metadata so results name their weights); of a
    ``transformers`` checkpoint directory: of its ``config.json`` then its weight file."""
    digest = hashlib.sha256()
    files = [path]
    if os.path.isdir(path):
        from models.transformers import find_weights
        files = [os.path.join(path, "config.json"), find_weights(path)]
    for file in files:
        with open(file, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


# -- the hub, offline --------------------------------------------------------------------------
#: seconds the one connection check before a hub download may take
HUB_CHECK_SECONDS = 3.0


def _unreachable(url: str, timeout: float) -> Optional[str]:
    """``None`` when a TCP connection to ``url``'s host opens within ``timeout`` seconds, else
    why not. The check runs in a daemon thread so that a hanging name lookup cannot hold the
    caller beyond ``timeout`` either."""
    parts = urllib.parse.urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    result: dict = {}

    def probe():
        try:
            socket.create_connection((parts.hostname, port), timeout=timeout).close()
            result["ok"] = True
        except OSError as exc:
            result["error"] = f"{type(exc).__name__}: {exc}"

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    if result.get("ok"):
        return None
    return result.get("error", f"no answer within {timeout:g} s")


def prepare_hub(url: Optional[str] = None) -> Optional[str]:
    """Make a hub download stop fast without network (timm's and ``transformers``' alike).

    With ``HF_HUB_OFFLINE`` set, ``huggingface_hub`` reads its cache only. Otherwise the hub
    (``HF_ENDPOINT``, or ``url``'s host for a plain URL) is checked once, with one TCP
    connection of at most :data:`HUB_CHECK_SECONDS`; when it does not answer, ``huggingface_hub``
    is put into offline mode for the rest of the process, so cached weights still load and
    nothing is retried. Returns ``None`` when online, else the sentence the error message uses.
    """
    import huggingface_hub.constants as hub
    if hub.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set, so only the local cache was looked at"
    url = url or hub.ENDPOINT
    reason = _unreachable(url, HUB_CHECK_SECONDS)
    if reason is None:
        return None
    hub.HF_HUB_OFFLINE = True
    return (f"{url} did not answer one {HUB_CHECK_SECONDS:g} s connection check ({reason}), so "
            "only the local cache was looked at (set HF_HUB_OFFLINE=1 to skip the check)")


def _timm_hub_check(name: str) -> Optional[str]:
    """:func:`prepare_hub` for a timm model name's pretrained source; a plain-URL source that
    is unreachable and not in torch's cache fails at once."""
    try:
        cfg = timm.models.get_pretrained_cfg(name)
    except Exception:   # an unknown name is reported by timm.create_model
        return None
    if cfg is None or getattr(cfg, "hf_hub_id", None):
        return prepare_hub()
    url = getattr(cfg, "url", None)
    if not url:
        return None
    cached = os.path.join(torch.hub.get_dir(), "checkpoints",
                          os.path.basename(urllib.parse.urlsplit(url).path))
    if os.path.isfile(cached):
        return None
    reason = _unreachable(url, HUB_CHECK_SECONDS)
    if reason is not None:
        raise _weights_unavailable(name, f"{url} did not answer one {HUB_CHECK_SECONDS:g} s "
                                         f"connection check ({reason}) and is not cached")
    return None


def create_model(name: str = DEFAULT_MODEL, checkpoint: Optional[str] = None,
                 pretrained: bool = True, device: Optional[torch.device | str] = None,
                 **kwargs) -> nn.Module:
    """Create a timm ViT with a class token, in eval mode.

    Weights, in this order:

    * ``checkpoint`` a directory with ``config.json`` (a Hugging Face ``transformers``
      checkpoint, ``model.safetensors`` or ``pytorch_model.bin``): converted to the equal timm
      ViT (:mod:`models.transformers`); the architecture is the config's, whatever ``name`` says;
    * ``checkpoint`` a file written by ``agcam convert``
      (:func:`models.transformers.save_timm_checkpoint`):
      its own architecture, label names and preprocessing, no ``transformers`` needed;
    * ``checkpoint`` another file: a state dict for the timm model ``name``;
    * ``name`` ``hf:<repo id or directory>``: ``transformers``' ``from_pretrained`` (hub cache);
    * else, with ``pretrained``, timm's pretrained weights (hub download and cache); else random.

    Every hub path stops within :data:`HUB_CHECK_SECONDS` without network (:func:`prepare_hub`).
    The number of classes is the checkpoint's head's (a fine-tuned VOC or CUB model), unless
    ``num_classes`` is given.
    """
    if checkpoint is not None and os.path.isdir(checkpoint):
        model = _convert(lambda: from_transformers(checkpoint), f"--checkpoint {checkpoint}")
    elif checkpoint is None and name.startswith("hf:"):
        model = _from_hub(name[len("hf:"):])
    else:
        raw = read_checkpoint_file(checkpoint) if checkpoint is not None else None
        if raw is not None and is_timm_checkpoint(raw):
            model = _convert(lambda: model_from_timm_checkpoint(raw, source=checkpoint),
                             f"--checkpoint {checkpoint}")
        else:
            state_dict = _unwrap_state_dict(raw, checkpoint) if raw is not None else None
            model = _create_timm_model(name, checkpoint, state_dict, pretrained, **kwargs)
    if getattr(model, "cls_token", None) is None:
        raise ModelError(f"--model {name}: has no class token; AGCAM explains the class-token row")
    if not hasattr(model, "blocks") or not hasattr(model, "patch_embed"):
        raise ModelError(f"--model {name}: not a Vision Transformer (no blocks / patch_embed)")
    model.eval()
    if device is not None:
        model.to(device)
    return model


def _convert(make, what: str) -> nn.Module:
    try:
        return make()
    except ConversionError as exc:
        raise ModelError(f"{what}: {exc}") from None
    except ImportError as exc:
        raise ModelError(f"{what}: needs the transformers package (pip install "
                         f"'transformers>=5'): {exc}") from None


def _from_hub(repo: str) -> nn.Module:
    how = None if os.path.isdir(repo) else prepare_hub()
    try:
        return _convert(lambda: from_pretrained(repo), f"--model hf:{repo}")
    except ModelError:
        raise
    except Exception as exc:   # hub, network and cache errors come in many types
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise WeightsUnavailableError(
            f"--model hf:{repo}: could not load it with transformers' from_pretrained "
            f"({type(exc).__name__}: {first}){'; ' + how if how else ''}; without network pass "
            "a local copy: --checkpoint DIR (config.json + model.safetensors)") from None


def _create_timm_model(name: str, checkpoint: Optional[str], state_dict: Optional[dict],
                       pretrained: bool, **kwargs) -> nn.Module:
    if state_dict is not None and "num_classes" not in kwargs:
        try:
            classifier = timm.models.get_pretrained_cfg(name).classifier or "head"
        except Exception:  # an unknown name is reported by create_model below
            classifier = "head"
        classes = head_classes(state_dict, classifier)
        if classes is not None:
            kwargs["num_classes"] = classes
    download = pretrained and checkpoint is None
    how = _timm_hub_check(name) if download else None
    try:
        model = timm.create_model(name, pretrained=download, **kwargs)
    except RuntimeError as exc:
        if "Unknown model" in str(exc) or "Invalid pretrained tag" in str(exc):
            raise ModelError(f"--model {name}: unknown timm model ({exc})") from None
        raise _weights_unavailable(name, exc, how) from None
    except ModelError:
        raise
    except Exception as exc:  # network, hub or cache errors come in many types
        raise _weights_unavailable(name, exc, how) from None
    if checkpoint is not None:
        load_checkpoint(model, checkpoint, state_dict)
    return model


def _weights_unavailable(name: str, exc, how: Optional[str] = None) -> WeightsUnavailableError:
    """One line: what could not be obtained, why, and how to go on without network."""
    try:
        cfg = timm.models.get_pretrained_cfg(name)
    except Exception:
        cfg = None
    source = getattr(cfg, "hf_hub_id", None) or getattr(cfg, "url", None) or "the timm hub"
    text = "" if isinstance(exc, str) else str(exc).strip()
    why = exc if isinstance(exc, str) else \
        f"{type(exc).__name__}: {text.splitlines()[0][:200] if text else ''}"
    return WeightsUnavailableError(
        f"could not obtain the pretrained weights of {name} from {source} ({why})"
        f"{'; ' + how if how else ''}; timm downloads them from the Hugging Face hub on first use "
        "and caches them; without network pass a local file instead: --checkpoint PATH (a .pth "
        "state dict such as the paper's jx_vit_base_p16_224-80ecf9dd.pth, or a .safetensors file)")


@dataclass(frozen=True)
class Geometry:
    """The token layout of a ViT: ``num_prefix_tokens`` then a ``grid`` of patches."""

    input_size: Tuple[int, int]
    grid: Tuple[int, int]
    num_prefix_tokens: int
    mean: Tuple[float, float, float]
    std: Tuple[float, float, float]


def model_geometry(model: nn.Module) -> Geometry:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    grid = tuple(int(g) for g in model.patch_embed.grid_size)
    img_size = getattr(model.patch_embed, "img_size", None)
    input_size = tuple(int(s) for s in img_size) if img_size is not None else \
        tuple(cfg.get("input_size", (3, 224, 224))[1:])
    return Geometry(
        input_size=input_size,
        grid=grid,
        num_prefix_tokens=int(getattr(model, "num_prefix_tokens", 1)),
        mean=tuple(float(m) for m in cfg.get("mean", (0.5, 0.5, 0.5))),
        std=tuple(float(s) for s in cfg.get("std", (0.5, 0.5, 0.5))),
    )


def build_transform(model: nn.Module, normalize: bool = True):
    """The paper's preprocessing through timm's ``create_transform``: ``Resize(input_size)``
    (squash, bilinear, no crop), to tensor, ``Normalize(mean, std)`` with the model's pretrained
    mean/std (0.5 for the paper's weights); without ``normalize``, pixels in [0, 1] (mean 0, std 1:
    an exact identity). Equal to the released torchvision transform bit for bit
    (``tests/test_models.py``)."""
    geometry = model_geometry(model)
    mean, std = (geometry.mean, geometry.std) if normalize else ((0.0,) * 3, (1.0,) * 3)
    return create_transform(input_size=(3, *geometry.input_size), interpolation="bilinear",
                            crop_pct=1.0, crop_mode="squash", mean=mean, std=std)


def load_image(path: str) -> Image.Image:
    """Open an image as RGB (palette, grey and CMYK files included)."""
    with Image.open(path) as image:
        return image.convert("RGB")
