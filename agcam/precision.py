"""Numeric precision of an explanation: ``fp32`` (exact, default), ``tf32`` or ``bf16``.

* ``fp32``: nothing changes; the released numbers.
* ``tf32``: float32 tensors, but CUDA matrix products and convolutions may use TF32 tensor cores
  (10-bit mantissa inputs, float32 accumulation): ``torch.backends.cuda.matmul.allow_tf32``,
  ``torch.backends.cudnn.allow_tf32`` and ``torch.set_float32_matmul_precision("high")``, for the
  duration of the call only. On a CPU the flags change nothing unless oneDNN has a TF32 kernel.
* ``bf16``: the call runs under ``torch.autocast(device_type, dtype=torch.bfloat16)``; matrix
  products in bfloat16, softmax, LayerNorm and the like in float32 as autocast decides. The
  explainers return their maps in the model's dtype (float32) whatever ran inside.

:func:`precision` is a context manager: the flags are global to the process while it is open and
restored on exit, so nothing is left switched on.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

# torch is imported inside the functions: the command-line parsers read PRECISIONS
PRECISIONS = ("fp32", "tf32", "bf16")
DEFAULT_PRECISION = "fp32"


def check_precision(mode: str) -> str:
    if mode not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {mode!r}")
    return mode


@contextlib.contextmanager
def tf32_allowed() -> Iterator[None]:
    """TF32 matrix products and convolutions inside the block; the previous flags restored."""
    import torch
    saved = (torch.get_float32_matmul_precision(), torch.backends.cuda.matmul.allow_tf32,
             torch.backends.cudnn.allow_tf32)
    try:
        torch.set_float32_matmul_precision("high")
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        yield
    finally:
        torch.set_float32_matmul_precision(saved[0])
        torch.backends.cuda.matmul.allow_tf32 = saved[1]
        torch.backends.cudnn.allow_tf32 = saved[2]


@contextlib.contextmanager
def precision(mode: str = DEFAULT_PRECISION, device_type: str = "cpu") -> Iterator[None]:
    """Run the block at ``mode`` (see the module docstring) on ``device_type`` (``cuda``, ``cpu``,
    or a :class:`torch.device`)."""
    check_precision(mode)
    if not isinstance(device_type, str):   # a torch.device
        device_type = device_type.type
    if mode == "fp32":
        yield
    elif mode == "tf32":
        with tf32_allowed():
            yield
    else:
        import torch
        with torch.autocast(device_type, dtype=torch.bfloat16):
            yield


def autocast_active(device_type: str) -> bool:
    """Whether autocast to a reduced precision is on for ``device_type`` (e.g. a caller's
    ``with precision("bf16", ...)`` around an explainer)."""
    import torch
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # pragma: no cover - torch < 2.4 takes no argument
        return torch.is_autocast_enabled() if device_type == "cuda" else \
            torch.is_autocast_cpu_enabled()
