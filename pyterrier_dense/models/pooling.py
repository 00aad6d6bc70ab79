"""Pooling of token states into one vector: ``cls``, ``mean`` (over real tokens) or ``max`` (over real tokens)."""
from __future__ import annotations

import torch

__all__ = ["POOLINGS", "pool"]

POOLINGS = ("cls", "mean", "max")


def pool(hidden: torch.Tensor, mask: torch.Tensor, mode: str) -> torch.Tensor:
    """Pool ``hidden`` (batch, tokens, dim) under ``mask`` (batch, tokens) into (batch, dim), in float32."""
    hidden = hidden.float()
    if mode == "cls":
        return hidden[:, 0]
    m = mask.unsqueeze(-1).to(hidden.dtype)
    if mode == "mean":
        return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
    if mode == "max":
        return hidden.masked_fill(m == 0, float("-inf")).max(1).values
    raise ValueError(f"pooling must be one of {POOLINGS}, got {mode!r}")
