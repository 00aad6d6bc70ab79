"""Docnos of an index: UTF-8 bytes one after another (``docnos.bin``) and int64 offsets (``docnos.off``, n + 1).

No separator is involved, so any string (line breaks, NULs, ``\\u2028``...) is stored exactly as given, and one long
docno costs only its own bytes. Duplicates are found from 64-bit hashes (8 bytes a document while streaming), with
equal hashes confirmed on the strings themselves.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["DocnoWriter", "Docnos", "check_docnos", "DATA_FILE", "OFFSETS_FILE"]

DATA_FILE, OFFSETS_FILE = "docnos.bin", "docnos.off"


def check_docnos(docnos: list, first_row: int = 0) -> None:
    """Every docno is a non-empty string; an error names the row and value otherwise."""
    for i, d in enumerate(docnos):
        if not isinstance(d, str) or not d:
            raise ValueError(f"docno at row {first_row + i} is {d!r}: docnos must be non-empty strings")


def _hashes(docnos: list[str]) -> np.ndarray:
    return pd.util.hash_array(np.asarray(docnos, dtype=object), categorize=False)


class DocnoWriter:
    """Streams docnos into ``docnos.bin`` / ``docnos.off`` of a build; ``finish`` rejects duplicates."""

    def __init__(self, build):
        self._build = build
        self._data = build.array_writer(DATA_FILE, "uint8", ())
        self._offsets = build.array_writer(OFFSETS_FILE, "int64", ())
        self._offsets.append(np.zeros(1, np.int64))
        self._end = 0
        self._hashes: list[np.ndarray] = []
        self.count = 0

    def append(self, docnos: list) -> None:
        check_docnos(docnos, self.count)
        encoded = [d.encode("utf-8", "surrogatepass") for d in docnos]
        lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
        self._data.append_bytes(b"".join(encoded))
        self._offsets.append(self._end + np.cumsum(lengths))
        self._end += int(lengths.sum())
        self._hashes.append(_hashes(docnos))
        self.count += len(docnos)

    def copy_current(self, reader) -> None:
        """Append the docnos of the generation being extended (bytes copied and checksum-verified, not decoded)."""
        base = Docnos.of(reader)
        self._build.copy_current(DATA_FILE, self._data)
        self._offsets.append(np.asarray(base.offsets[1:]) + self._end)
        self._end += int(base.offsets[-1])
        for start in range(0, len(base), 1 << 20):
            self._hashes.append(_hashes(base[np.arange(start, min(start + (1 << 20), len(base)))].tolist()))
        self.count += len(base)

    def finish(self) -> None:
        """Raise on the first duplicate docno (in sorted order of hash), naming it."""
        if self.count < 2:
            return
        hashes = np.concatenate(self._hashes)
        order = np.argsort(hashes, kind="stable")
        same = np.nonzero(hashes[order[1:]] == hashes[order[:-1]])[0]
        if not len(same):
            return
        self._data.close()
        self._offsets.close()
        reader = Docnos(self._data.path.parent)
        for i in same:
            a, b = reader[np.array([order[i], order[i + 1]])]
            if a == b:
                raise ValueError(f"duplicate docno {a!r}: every document must have its own docno")


class Docnos:
    """Read side: ``docnos[rows]`` gives docnos (``str`` objects), ``rows_of(docnos)`` rows (-1 where absent).

    Both files are memory-mapped; on first use the docnos are decoded once into Python strings (about 60 bytes a
    document), which every lookup shares, so building a result frame copies pointers instead of decoding text.
    """

    def __init__(self, directory: Path):
        directory = Path(directory)
        self.offsets = np.asarray(np.memmap(directory / OFFSETS_FILE, dtype=np.int64, mode="r"))
        size = int(self.offsets[-1])
        self._data = np.memmap(directory / DATA_FILE, dtype=np.uint8, mode="r") if size else np.empty(0, np.uint8)
        if len(self._data) != size:
            raise ValueError(f"{directory / DATA_FILE} holds {len(self._data)} bytes; its offsets end at {size}")
        self._objects: np.ndarray | None = None
        self._index: pd.Index | None = None
        self._pandas = None

    @classmethod
    def of(cls, reader) -> "Docnos":
        """The docnos of a pinned generation, opened once per process."""
        if "docnos" not in reader.cache:
            reader.cache["docnos"] = cls(reader.directory)
        return reader.cache["docnos"]

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def objects(self) -> np.ndarray:
        if self._objects is None:
            data = self._data.tobytes()
            bounds = self.offsets.tolist()
            out = np.empty(len(self), dtype=object)
            out[:] = [data[a:b].decode("utf-8", "surrogatepass") for a, b in zip(bounds[:-1], bounds[1:])]
            self._objects = out
        return self._objects

    def __getitem__(self, rows) -> np.ndarray:
        if self._objects is None and isinstance(rows, np.ndarray) and len(rows) < len(self) // 64:
            data, off = self._data, self.offsets   # a few rows of a big index: decode just those
            out = np.empty(len(rows), dtype=object)
            out[:] = [bytes(data[off[r]:off[r + 1]]).decode("utf-8", "surrogatepass") for r in rows.tolist()]
            return out
        return self.objects[rows]

    def take(self, rows: np.ndarray):
        """The docnos at ``rows`` as a pandas string array, ready for a result frame: taking from an array converted
        once is ~3x faster than letting pandas re-check the strings of every frame."""
        if self._pandas is None:
            self._pandas = pd.Series(self.objects, copy=False).array
        return self._pandas.take(rows)

    def rows_of(self, docnos) -> np.ndarray:
        if self._index is None:
            self._index = pd.Index(self.objects, copy=False)
        return self._index.get_indexer(pd.Index(np.asarray(docnos, dtype=object)))
