"""Pooling of a model's output into one vector per text: ``cls`` (first token), ``mean`` (over real tokens), ``max``
(over real tokens), or ``pooler`` (the model's own pooled output: for DPR the first token's state, projected when
the checkpoint has a projection; for BERT its dense+tanh pooler)."""
from __future__ import annotations

import torch

__all__ = ["POOLINGS", "pool"]

POOLINGS = ("cls", "mean", "max", "pooler")


def pool(output, mask: torch.Tensor, mode: str) -> torch.Tensor:
    """Pool a model ``output`` under ``mask`` (batch, tokens) into (batch, dim), in float32."""
    if mode == "pooler":
        pooled = getattr(output, "pooler_output", None)
        if pooled is None:
            raise ValueError("pooling='pooler' needs a model with a pooled output, and this one has none; "
                             "use 'cls', 'mean' or 'max'")
        return pooled.float()
    hidden = output.last_hidden_state.float()
    if mode == "cls":
        return hidden[:, 0]
    m = mask.unsqueeze(-1).to(hidden.dtype)
    if mode == "mean":
        return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
    if mode == "max":
        return hidden.masked_fill(m == 0, float("-inf")).max(1).values
    raise ValueError(f"pooling must be one of {POOLINGS}, got {mode!r}")
