"""Helpers shared by every network of every family (pure PyTorch, no vaelab import)."""

from __future__ import annotations

import torch.nn as nn


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
