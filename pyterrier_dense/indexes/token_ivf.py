"""PLAID's inverted file over a token index: for each centroid, the (ascending) rows of the documents that have at
least one token assigned to it. Built from the stored codes in two passes over document-aligned blocks, so memory
stays bounded by a block whatever the collection size."""
from __future__ import annotations

import os
from typing import Iterator

import numpy as np

__all__ = ["build_ivf", "doc_blocks"]

BLOCK_TOKENS = 1 << 18


def doc_blocks(offsets: np.ndarray, block_tokens: int = BLOCK_TOKENS) -> Iterator[tuple[int, int]]:
    """``(first_doc, end_doc)`` ranges whose tokens number about ``block_tokens`` (a longer document alone)."""
    n = len(offsets) - 1
    d = 0
    while d < n:
        end = int(np.searchsorted(offsets, offsets[d] + block_tokens, side="right")) - 1
        end = min(max(end, d + 1), n)
        yield d, end
        d = end


def _pairs(codes_file, offsets: np.ndarray, d0: int, d1: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (code, doc) pairs of documents d0..d1, sorted by code then doc (the codes read with a plain read,
    so that pages do not stay counted in the process's memory as a memory map's would)."""
    lengths = np.diff(offsets[d0:d1 + 1])
    docs = np.repeat(np.arange(d0, d1, dtype=np.int64), lengths)
    codes_file.seek(4 * int(offsets[d0]))
    codes = np.fromfile(codes_file, dtype=np.int32, count=int(offsets[d1] - offsets[d0]))
    keys = np.unique(codes.astype(np.int64) * count + docs)
    return keys // count, keys % count


def build_ivf(build, offsets: np.ndarray, ncentroids: int) -> None:
    """Write ``ivf.off`` (int64, ncentroids + 1) and ``ivf.docs.i4`` (int32) into ``build`` from its ``codes.i4``."""
    count = len(offsets) - 1
    writer = build._writers.get("codes.i4")
    if writer is not None:
        writer.close()
    codes = open(build.tmp / "codes.i4", "rb")
    try:
        _write_lists(build, codes, offsets, ncentroids, count)
    finally:
        codes.close()


def _write_lists(build, codes, offsets: np.ndarray, ncentroids: int, count: int) -> None:
    sizes = np.zeros(ncentroids, np.int64)
    for d0, d1 in doc_blocks(offsets):
        c, _ = _pairs(codes, offsets, d0, d1, count)
        sizes += np.bincount(c, minlength=ncentroids)
    ivf_off = np.zeros(ncentroids + 1, np.int64)
    np.cumsum(sizes, out=ivf_off[1:])
    # each block's documents go straight to their lists' places with positioned writes: no memory map, whose
    # written pages would stay counted in the process's memory until the build ends
    fd = os.open(build.tmp / "ivf.docs.i4", os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o666)
    try:
        os.ftruncate(fd, 4 * int(ivf_off[-1]))
        cursor = ivf_off[:-1].copy()
        for d0, d1 in doc_blocks(offsets):
            c, d = _pairs(codes, offsets, d0, d1, count)
            if not len(c):
                continue
            bounds = np.flatnonzero(np.concatenate([[True], c[1:] != c[:-1], [True]]))
            data = d.astype(np.int32).tobytes()
            for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
                os.pwrite(fd, data[4 * a:4 * b], 4 * int(cursor[c[a]]))
            cursor += np.bincount(c, minlength=ncentroids)
        os.fsync(fd)
    finally:
        os.close(fd)
    build.array_writer("ivf.off", "int64", ()).append(ivf_off)
