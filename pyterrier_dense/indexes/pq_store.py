"""Compressed-only storage: product-quantised codes + docnos of a dense index's vectors, no full vectors."""
from __future__ import annotations

import dataclasses
import os
import shutil

import faiss

from .ann_specs import PqSpec
from .docnos import DATA_FILE, OFFSETS_FILE, Docnos
from .faiss_structure import build_structure
from .storage import IndexBuild, IndexReader, open_reader

__all__ = ["PQSnapshot", "open_pq", "build_pq_index", "write_pq_index", "TYPE", "FORMAT", "STRUCTURE"]

TYPE, FORMAT = "dense_index", "pyterrier_dense.pq"
STRUCTURE = "pq.faiss"


class PQSnapshot:
    """One pinned generation of a compressed-only index: the FAISS codes, docnos and manifest."""

    vector_file = None

    def __init__(self, reader: IndexReader):
        self.reader, self.manifest = reader, reader.meta
        self.path, self.count, self.dim = reader.path, self.manifest["count"], self.manifest["dim"]

    @property
    def encoder_settings(self) -> dict | None:
        return self.manifest.get("encoder")

    @property
    def spec(self) -> PqSpec:
        accepted = {f.name for f in dataclasses.fields(PqSpec) if f.init}
        return PqSpec(**{k: v for k, v in self.manifest["report"]["spec"].items() if k in accepted})

    @property
    def docnos(self) -> Docnos:
        return Docnos.of(self.reader)

    def structure(self) -> tuple:
        """``(faiss_index, build_report, file)``, read once per process."""
        if "pq" not in self.reader.cache:
            file = self.reader.file(STRUCTURE)
            self.reader.cache["pq"] = (faiss.read_index(str(file)), self.manifest["report"], file)
        return self.reader.cache["pq"]

    def verify(self) -> None:
        self.reader.verify()


def open_pq(path: str | os.PathLike) -> PQSnapshot:
    """Pin the current generation of the compressed index at ``path`` (shared within the process)."""
    return open_reader(path, TYPE, FORMAT).snapshot(PQSnapshot)


def build_pq_index(snapshot, path: str | os.PathLike, spec: PqSpec, *, train_size: int = 100_000,
                   mode: str = "error") -> None:
    """Write a compressed-only index of a dense snapshot's vectors at ``path`` (atomically, like every index)."""
    spec.validate(snapshot.dim, snapshot.count)
    with IndexBuild(path, artifact_type=TYPE, artifact_format=FORMAT, mode=mode) as build:
        structure, report = build_structure(snapshot.vectors, spec, train_size=train_size, seed=spec.seed)
        _publish(build, structure, snapshot, {"count": snapshot.count, "dim": snapshot.dim,
                                              "encoder": snapshot.encoder_settings, "source": str(snapshot.path),
                                              "report": report})


def write_pq_index(snapshot: PQSnapshot, path: str | os.PathLike, structure: faiss.Index, *, encoder: dict | None,
                   report: dict, mode: str = "error") -> None:
    """Publish ``structure``, a FAISS index of the same documents in the same order as ``snapshot``'s (its codes
    kept, its quantiser retrained: JPQ), as a compressed-only index at ``path`` with ``snapshot``'s docnos, recording
    ``encoder`` (the settings of the encoder its queries must come from) and ``report`` (it keeps ``spec``)."""
    if structure.ntotal != snapshot.count or structure.d != snapshot.dim:
        raise ValueError(f"the structure holds {structure.ntotal} {structure.d}-dimensional vectors, but "
                         f"{snapshot.path} holds {snapshot.count} {snapshot.dim}-dimensional ones")
    if "spec" not in report:
        raise ValueError("report must keep the build's 'spec' (the retriever reads its search parameters from it)")
    with IndexBuild(path, artifact_type=TYPE, artifact_format=FORMAT, mode=mode) as build:
        _publish(build, structure, snapshot, {"count": snapshot.count, "dim": snapshot.dim, "encoder": encoder,
                                              "source": str(snapshot.path), "report": report})


def _publish(build: IndexBuild, structure: faiss.Index, snapshot, manifest: dict) -> None:
    """Write ``structure`` and ``snapshot``'s docnos into the build and publish it with ``manifest``."""
    faiss.write_index(structure, str(build.tmp / STRUCTURE))
    for name in (DATA_FILE, OFFSETS_FILE):
        shutil.copyfile(snapshot.reader.file(name), build.tmp / name)
    build.publish(manifest)
