"""Building FAISS structures from stored vectors, and caching them inside a DenseIndex's directory.

A structure is trained on a seeded sample (memory bounded by ``train_size``), filled block by block from the memory
map, and written into the generation it was built from as ``faiss/<kind>-<params>-<vectors>.faiss`` through a
temporary file and ``os.replace``, so a crash never leaves a half-written structure under its final name. Its name
keys the build parameters and the vectors' checksum; its report records the vectors file's size and modification
time, so vectors changed in place mean a rebuild, never a stale structure. A file lock makes one process build it
while others wait, and one loaded copy is shared by every retriever of the process.
"""
from __future__ import annotations

import json
import logging
import os
import time
import zlib
from pathlib import Path

import faiss
import numpy as np
from tqdm.auto import tqdm

from .ann_specs import as_dict, check_training_points
from .storage import CorruptIndexError, crc32_of, file_lock, settings_digest, write_atomically

__all__ = ["build_structure", "cached_structure", "structure_file", "verify_structures"]

log = logging.getLogger("pyterrier_dense")

CACHE_DIR = "faiss"
ADD_BLOCK = 65536


def training_sample(vectors: np.ndarray, train_size: int, seed: int) -> np.ndarray:
    n = len(vectors)
    if train_size >= n:
        return np.asarray(vectors, dtype=np.float32)
    rows = np.sort(np.random.default_rng(seed).choice(n, size=train_size, replace=False))
    return np.asarray(vectors[rows], dtype=np.float32)


def build_structure(vectors: np.ndarray, spec, *, train_size: int = 100_000, seed: int = 0,
                    verbose: bool = True) -> tuple[faiss.Index, dict]:
    """Train (on a seeded sample of ``train_size`` vectors) and fill a FAISS structure; returns it and a report."""
    count, dim = vectors.shape
    spec.validate(dim, count)
    index = spec.create(dim, count)
    report = {"spec": as_dict(spec), "count": count, "train_size": 0, "train_points_needed": 0}
    started = time.time()
    if not index.is_trained:
        sample = training_sample(vectors, train_size, seed)
        check_training_points(spec, count, len(sample), f"train_size={train_size} gives")
        needed = spec.train_points_needed(count)
        report.update(train_size=len(sample), train_points_needed=needed)
        if len(sample) < needed:
            log.warning("training %s on %d vectors; FAISS wants at least %d (%d per centroid): expect lower quality",
                        spec, len(sample), needed, 39)
            report["undertrained"] = True
        spec.train(index, sample)
    blocks = range(0, count, ADD_BLOCK)
    for start in tqdm(blocks, desc=f"building {spec}", unit="block", disable=not verbose or len(blocks) < 4):
        index.add(np.asarray(vectors[start:start + ADD_BLOCK], dtype=np.float32))
    report["build_seconds"] = round(time.time() - started, 3)
    return index, report


def structure_file(directory: Path, spec, vectors_crc: int, train_size: int) -> Path:
    key = settings_digest({**as_dict(spec), "train_size": train_size})
    return Path(directory) / CACHE_DIR / f"{spec.kind}-{key}-{vectors_crc:08x}.faiss"


def _vectors_stamp(snapshot) -> list:
    st = os.stat(snapshot.reader.file(snapshot.vector_file))
    return [st.st_size, st.st_mtime_ns]


def _usable(path: Path, report_path: Path, snapshot) -> dict | None:
    """The build report of a cached structure, or None when it is missing or was built from vectors that changed
    since (the vectors file's size and modification time are recorded when the structure is built)."""
    if not (path.exists() and report_path.exists()):
        return None
    try:
        report = json.loads(report_path.read_text())
    except ValueError:
        return None
    if report.get("vectors_stamp") != _vectors_stamp(snapshot) or report.get("bytes") != path.stat().st_size:
        log.warning("%s was built from other vectors or is damaged: rebuilding it", path.name)
        return None
    return report


_LOADED: dict[tuple, tuple] = {}   # (structure, report, file) this process has loaded, newest last
_KEEP_LOADED = 8


def _remember(key: tuple, loaded: tuple) -> tuple:
    _LOADED[key] = loaded
    while len(_LOADED) > _KEEP_LOADED:   # bounded: structures of replaced generations do not pile up
        _LOADED.pop(next(iter(_LOADED)))
    return loaded


def cached_structure(snapshot, spec, *, train_size: int = 100_000, verbose: bool = True) -> tuple[faiss.Index, dict, Path]:
    """The structure for ``spec`` over a pinned generation's vectors: shared by every retriever of the process,
    loaded from ``<generation>/faiss/`` or built there on first use (one process builds it; others wait for it)."""
    spec.validate(snapshot.dim, snapshot.count)
    crc = snapshot.manifest["files"][snapshot.vector_file]["crc32"]
    path = structure_file(snapshot.reader.directory, spec, crc, train_size)
    report_path = path.with_suffix(".json")
    key = (str(path), tuple(_vectors_stamp(snapshot)))
    if key in _LOADED:
        return _LOADED[key]   # no file read per search: the report is kept with the structure
    report = _usable(path, report_path, snapshot)
    if report is None:
        if not os.access(snapshot.reader.directory, os.W_OK):
            raise PermissionError(f"{snapshot.path} is read-only and has no cached {spec}; build it once where the "
                                  "index is writable (any retriever with these build parameters does), then copy it")
        path.parent.mkdir(exist_ok=True)
        with file_lock(path.with_suffix(".lock"), what=f"the {spec} of {snapshot.path}"):
            report = _usable(path, report_path, snapshot)   # another process may have built it while we waited
            if report is None:
                index, report = build_structure(snapshot.vectors, spec, train_size=train_size,
                                                seed=getattr(spec, "seed", 0), verbose=verbose)
                data = faiss.serialize_index(index).tobytes()
                write_atomically(path, data)
                report.update(vectors_crc32=crc, vectors_stamp=_vectors_stamp(snapshot), bytes=len(data),
                              crc32=zlib.crc32(data))
                write_atomically(report_path, json.dumps(report).encode())
                return _remember(key, (index, report, path))
    return _remember(key, (faiss.read_index(str(path)), report, path))


def verify_structures(snapshot) -> None:
    """Check every cached structure of a generation: its own checksum, and that it was built from these vectors."""
    crc = snapshot.manifest["files"][snapshot.vector_file]["crc32"]
    for report_path in sorted((snapshot.reader.directory / CACHE_DIR).glob("*.json")):
        path = report_path.with_suffix(".faiss")
        report = json.loads(report_path.read_text())
        if not path.exists() or crc32_of(path) != report.get("crc32"):
            raise CorruptIndexError(f"{path} fails its checksum: delete it and it is rebuilt on next use")
        if report.get("vectors_crc32") != crc:
            raise CorruptIndexError(f"{path} was built from other vectors than {snapshot.path} holds: delete it")
