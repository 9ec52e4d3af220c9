"""What every benchmark starts with: the thread count, the seed and a randomly initialised model."""
from __future__ import annotations

import argparse

import torch
from torch import nn

from models.vit import create_model


def random_model(args: argparse.Namespace) -> nn.Module:
    """``--threads`` applied, seed 0, and ``--model`` with random weights on ``--device``."""
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    return create_model(args.model, pretrained=False, device=torch.device(args.device))
