"""Docnos of an index: written as a stream, stored as one fixed-width unicode array, looked up through a hash index."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["DocnoWriter", "Docnos"]

FILE = "docnos.npy"


def check_docnos(docnos: list) -> None:
    """Every docno is a non-empty string without line breaks, and none repeats within the list."""
    for i, d in enumerate(docnos):
        if not isinstance(d, str) or not d or "\n" in d or "\r" in d:
            raise ValueError(f"docno at row {i} is {d!r}: docnos must be non-empty strings without line breaks")
    if len(set(docnos)) != len(docnos):
        seen = set()
        for d in docnos:
            if d in seen:
                raise ValueError(f"duplicate docno {d!r}: every document must have its own docno")
            seen.add(d)


class DocnoWriter:
    """Streams docnos to a temporary text file; ``finish`` turns them into ``docnos.npy`` and rejects duplicates.

    Memory while streaming is constant; ``finish`` needs one sort of the docnos (a few bytes a document).
    """

    def __init__(self, directory: Path):
        self.directory = directory
        self._tmp = directory / "docnos.txt.partial"
        self._file = open(self._tmp, "w", encoding="utf-8")
        self.count = 0

    def append(self, docnos: list) -> None:
        check_docnos(docnos)
        self._file.write("\n".join(docnos))
        self._file.write("\n")
        self.count += len(docnos)

    def finish(self) -> None:
        self._file.close()
        with open(self._tmp, encoding="utf-8") as f:
            docnos = np.array(f.read().splitlines() if self.count else [], dtype=str)
        self._tmp.unlink()
        if len(docnos) > 1:
            ordered = np.sort(docnos)
            dup = np.nonzero(ordered[1:] == ordered[:-1])[0]
            if len(dup):
                raise ValueError(f"duplicate docno {str(ordered[dup[0]])!r}: every document must have its own docno")
        np.save(self.directory / FILE, docnos if len(docnos) else np.array([], dtype="<U1"))

    def close(self) -> None:
        self._file.close()


class Docnos:
    """Read side: ``docnos[rows]`` gives docnos (as ``str`` objects), ``rows_of(docnos)`` rows (-1 where absent).

    The file is memory-mapped; on first use the docnos are decoded once into Python strings (about 60 bytes a
    document), which both lookups share, so building a result frame copies pointers instead of decoding text.
    """

    def __init__(self, directory: Path):
        self._array = np.load(directory / FILE, mmap_mode="r")
        self._objects: np.ndarray | None = None
        self._index: pd.Index | None = None
        self._pandas = None

    def __len__(self) -> int:
        return len(self._array)

    @property
    def objects(self) -> np.ndarray:
        if self._objects is None:
            self._objects = np.asarray(self._array).astype(object)
        return self._objects

    def __getitem__(self, rows) -> np.ndarray:
        return self.objects[rows]

    def take(self, rows: np.ndarray):
        """The docnos at ``rows`` as a pandas array of pandas' own string dtype, ready for a result frame: taking
        from an array converted once is ~3x faster than letting pandas re-check the strings of every frame."""
        if self._pandas is None:
            self._pandas = pd.Series(self.objects, copy=False).array
        return self._pandas.take(rows)

    def rows_of(self, docnos) -> np.ndarray:
        if self._index is None:
            self._index = pd.Index(self.objects, copy=False)
        return self._index.get_indexer(pd.Index(np.asarray(docnos, dtype=object)))
