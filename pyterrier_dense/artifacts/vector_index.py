"""VectorIndex: what every user-facing index of document vectors shares (current generation, encoder pairing,
size report, equality by path)."""
from __future__ import annotations

import os
from pathlib import Path

import pyterrier as pt

from ..indexes.docnos import Docnos
from ..indexes.storage import META_FILE, meta_stamp
from ..indexes.vector_index import ENCODER_KEYS, encoder_differences

__all__ = ["VectorIndex"]


class VectorIndex(pt.Artifact):
    """Base of the index kinds. Subclasses define ``_open()`` (pin the current generation: a snapshot object).

    Every read goes through :meth:`snapshot`, which notices a new generation written by any process (an append, an
    overwrite) and switches to it; a stage takes one snapshot per call, so it never mixes two generations.
    """

    ENCODER_KEYS: tuple[str, ...] | None = ENCODER_KEYS   # settings compared with an encoder's (None: all it records)

    def __init__(self, path: str | os.PathLike):
        super().__init__(path)
        self._snap = None
        self._stamp = None

    def _open(self):
        """Pin the current generation and return the kind's snapshot (``open_dense``, ``open_pq``, ...). Each index
        kind must say how its generation is read, so the base has nothing to fall back on."""
        raise NotImplementedError(f"{type(self).__name__} must define _open()")

    def snapshot(self):
        """The current generation, pinned (re-opened when the index has changed since the last call)."""
        stamp = meta_stamp(self.path)
        if self._snap is None or stamp != self._stamp:
            self._snap, self._stamp = self._open(), stamp
        return self._snap

    def exists(self) -> bool:
        return (Path(self.path) / META_FILE).exists()

    @property
    def manifest(self) -> dict:
        return self.snapshot().manifest

    @property
    def count(self) -> int:
        return self.snapshot().count

    @property
    def dim(self) -> int:
        return self.snapshot().dim

    @property
    def encoder_settings(self) -> dict | None:
        """The settings of the encoder that produced the vectors (``None`` when vectors were given directly)."""
        return self.snapshot().encoder_settings

    @property
    def docnos(self) -> Docnos:
        return self.snapshot().docnos

    def verify(self) -> None:
        """Re-read every file and check it against the manifest's checksums; raises on any difference."""
        self.snapshot().verify()

    def check_encoder(self, settings: dict, snapshot=None) -> None:
        """Raise if an encoder with ``settings`` would not produce vectors comparable with this index's."""
        snap = snapshot or self.snapshot()
        if settings.get("dim") is not None and settings["dim"] != snap.dim:
            raise ValueError(f"the encoder gives {settings['dim']}-dimensional vectors, but {self.path} holds "
                             f"{snap.dim}-dimensional ones")
        diffs = encoder_differences(snap.encoder_settings, settings, self.ENCODER_KEYS)
        if diffs:
            raise ValueError(f"{self.path} was built with another encoder configuration ({'; '.join(diffs)}); "
                             "rebuild the index or pass check_encoder=False")

    def __eq__(self, other) -> bool:
        return type(other) is type(self) and os.path.abspath(self.path) == os.path.abspath(other.path)

    def __hash__(self) -> int:
        return hash((type(self).__name__, os.path.abspath(self.path)))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"
