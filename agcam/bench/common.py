"""What every benchmark starts with: the thread count, the seed and a randomly initialised model;
and how one job is timed."""
from __future__ import annotations

import argparse
import time
from typing import Callable, Tuple, TypeVar

import torch
from torch import nn

from models.vit import create_model

T = TypeVar("T")


def random_model(args: argparse.Namespace) -> nn.Module:
    """``--threads`` applied, seed 0, and ``--model`` with random weights on ``--device``."""
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    return create_model(args.model, pretrained=False, device=torch.device(args.device))


def timed(fn: Callable[[], T], device: torch.device) -> Tuple[float, T]:
    """``(seconds, fn())``: the time ``fn()`` takes, the device synchronised before and after
    (CUDA), and what it returns."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    value = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start, value
