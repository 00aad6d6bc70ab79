"""Building FAISS structures from stored vectors, and caching them inside a DenseIndex's directory.

A structure is trained on a seeded sample (memory bounded by ``train_size``), filled block by block from the memory
map, and written as ``faiss/<kind>-<params>-<vectors>.faiss`` through a temporary file and ``os.replace``, so a
crash never leaves a half-written structure under its final name. Its name keys both the build parameters and the
vectors' checksum, so changed parameters or vectors mean a rebuild, never a stale structure.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import uuid
from pathlib import Path

import faiss
import numpy as np
from tqdm.auto import tqdm

from .ann_specs import as_dict, check_training_points

__all__ = ["build_structure", "cached_structure", "structure_file"]

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


def structure_file(index_path: Path, spec, vectors_crc: int, train_size: int) -> Path:
    key = json.dumps({**as_dict(spec), "train_size": train_size}, sort_keys=True)
    digest = hashlib.sha1(key.encode()).hexdigest()[:12]
    return Path(index_path) / CACHE_DIR / f"{spec.kind}-{digest}-{vectors_crc:08x}.faiss"


def cached_structure(dense_index, spec, *, train_size: int = 100_000, verbose: bool = True) -> tuple[faiss.Index, dict, Path]:
    """Load the structure for ``spec`` from the index directory, building and caching it on first use."""
    m = dense_index.manifest
    spec.validate(m["dim"], m["count"])
    vec_file = next(name for name in m["files"] if name.startswith("vecs."))
    crc = m["files"][vec_file]["crc32"]
    path = structure_file(dense_index.path, spec, crc, train_size)
    report_path = path.with_suffix(".json")
    if path.exists() and report_path.exists():
        return faiss.read_index(str(path)), json.loads(report_path.read_text()), path
    if not os.access(dense_index.path, os.W_OK):
        raise PermissionError(f"{dense_index.path} is read-only and has no cached {spec}; build it once where the "
                              "index is writable (any retriever with these build parameters does), then copy it")
    index, report = build_structure(dense_index.vectors, spec, train_size=train_size,
                                    seed=getattr(spec, "seed", 0), verbose=verbose)
    path.parent.mkdir(exist_ok=True)
    for stale in path.parent.glob(f"{spec.kind}-*.faiss"):
        if not stale.name.endswith(f"-{crc:08x}.faiss"):   # built for other vectors
            stale.unlink(missing_ok=True)
            stale.with_suffix(".json").unlink(missing_ok=True)
    _write_atomically(path, faiss.serialize_index(index).tobytes())
    _write_atomically(report_path, json.dumps(report).encode())
    return index, report, path


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
