"""What every index of document vectors shares: the encoder-settings comparison and the size report."""
from __future__ import annotations

__all__ = ["ENCODER_KEYS", "encoder_differences", "size_report"]

ENCODER_KEYS = ("fingerprint", "pooling", "normalize", "query_prefix", "doc_prefix", "max_length", "dim")


def size_report(nbytes: int, count: int, dim: int) -> dict:
    """``bytes``, ``bytes_per_doc`` and ``compression_vs_float32`` of a representation taking ``nbytes``."""
    per_doc = nbytes / count if count else 0.0
    return {"bytes": nbytes, "bytes_per_doc": per_doc,
            "compression_vs_float32": (4 * dim / per_doc) if per_doc else float("nan")}


NAME_KEYS = ("model", "query_model")   # names and paths: the same weights may go by several


def encoder_differences(stored: dict | None, settings: dict, keys: tuple[str, ...] | None = ENCODER_KEYS) -> list[str]:
    """``"key: index X, encoder Y"`` for every vector-changing setting in which ``settings`` differ from ``stored``
    (nothing when the index records no encoder, i.e. its vectors were given directly). ``keys=None`` compares every
    key the index records except the model's name (an encoder family whose settings all change vectors).

    >>> encoder_differences({"pooling": "mean", "dim": 4}, {"pooling": "cls", "dim": 4})
    ["pooling: index 'mean', encoder 'cls'"]
    """
    if not stored:
        return []
    keys = [k for k in stored if k not in NAME_KEYS] if keys is None else keys
    return [f"{key}: index {stored.get(key)!r}, encoder {settings.get(key)!r}" for key in keys
            if key in stored and stored.get(key) != settings.get(key)]
