"""VectorIndex: what every index of document vectors shares (manifest, docnos, encoder pairing, size report)."""
from __future__ import annotations

import os
from pathlib import Path

import pyterrier as pt

from .docnos import Docnos
from .storage import load_manifest

__all__ = ["VectorIndex", "ENCODER_KEYS", "encoder_differences", "size_report"]

ENCODER_KEYS = ("fingerprint", "pooling", "normalize", "query_prefix", "doc_prefix", "max_length", "dim")


def size_report(nbytes: int, count: int, dim: int) -> dict:
    """``bytes``, ``bytes_per_doc`` and ``compression_vs_float32`` of a representation taking ``nbytes``."""
    per_doc = nbytes / count if count else 0.0
    return {"bytes": nbytes, "bytes_per_doc": per_doc,
            "compression_vs_float32": (4 * dim / per_doc) if per_doc else float("nan")}


def encoder_differences(stored: dict | None, settings: dict) -> list[str]:
    """``"key: index X, encoder Y"`` for every vector-changing setting in which ``settings`` differ from ``stored``
    (nothing when the index records no encoder, i.e. its vectors were given directly)."""
    if not stored:
        return []
    return [f"{key}: index {stored.get(key)!r}, encoder {settings.get(key)!r}" for key in ENCODER_KEYS
            if key in stored and stored.get(key) != settings.get(key)]


class VectorIndex(pt.Artifact):
    """Base of the index kinds: subclasses set ``ARTIFACT_TYPE``/``ARTIFACT_FORMAT`` and may check more on open."""

    ARTIFACT_TYPE = ARTIFACT_FORMAT = ""

    def __init__(self, path: str | os.PathLike):
        super().__init__(path)
        self._meta: dict | None = None
        self._docnos: Docnos | None = None

    def _check_manifest(self, meta: dict) -> None:
        """Extra consistency checks of a subclass (raise CorruptIndexError)."""

    def exists(self) -> bool:
        return (Path(self.path) / "pt_meta.json").exists()

    @property
    def manifest(self) -> dict:
        if self._meta is None:
            meta = load_manifest(self.path, self.ARTIFACT_TYPE, self.ARTIFACT_FORMAT)
            self._check_manifest(meta)
            self._meta = meta
        return self._meta

    @property
    def count(self) -> int:
        return self.manifest["count"]

    @property
    def dim(self) -> int:
        return self.manifest["dim"]

    @property
    def encoder_settings(self) -> dict | None:
        """The settings of the encoder that produced the vectors (``None`` when vectors were given directly)."""
        return self.manifest.get("encoder")

    @property
    def docnos(self) -> Docnos:
        if self._docnos is None:
            self.manifest
            self._docnos = Docnos(Path(self.path))
        return self._docnos

    def check_encoder(self, settings: dict) -> None:
        """Raise if an encoder with ``settings`` would not produce vectors comparable with this index's."""
        if settings["dim"] != self.dim:
            raise ValueError(f"the encoder gives {settings['dim']}-dimensional vectors, but {self.path} holds {self.dim}-dimensional ones")
        diffs = encoder_differences(self.encoder_settings, settings)
        if diffs:
            raise ValueError(f"{self.path} was built with another encoder configuration ({'; '.join(diffs)}); "
                             "rebuild the index or pass check_encoder=False")

    def size(self) -> dict:
        """Bytes on disk per document for the searched representation, and compression against float32."""
        return size_report(self._searched_bytes(), self.count, self.dim)

    def _searched_bytes(self) -> int:
        raise TypeError(f"{type(self).__name__} does not define the size of its searched representation")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"
