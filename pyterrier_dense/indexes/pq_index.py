"""PQIndex: a compressed-only index (product-quantised codes + docnos, no full vectors), so the saving is real."""
from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

import faiss

from .ann_search import AnnSearcher
from .ann_specs import PqSpec
from .faiss_structure import build_structure
from .storage import IndexBuild
from .vector_index import VectorIndex

__all__ = ["PQIndex", "build_pq_index"]

TYPE, FORMAT = "dense_index", "pyterrier_dense.pq"
STRUCTURE = "pq.faiss"


class PQIndex(VectorIndex):
    """Product-quantised codes of a DenseIndex's vectors, searched by asymmetric distance computation.

    Example::

        pq_index = dense_index.compress("scifact.pq", m=96, nbits=4)   # 48 bytes a document: 32x smaller
        pq = enc >> pq_index.retriever(num_results=1000)
        pq_index.size()   # {'bytes_per_doc': ..., 'compression_vs_float32': ...}
    """

    ARTIFACT_TYPE, ARTIFACT_FORMAT = TYPE, FORMAT

    @property
    def spec(self) -> PqSpec:
        accepted = {f.name for f in dataclasses.fields(PqSpec) if f.init}
        return PqSpec(**{k: v for k, v in self.manifest["report"]["spec"].items() if k in accepted})

    def _searched_bytes(self) -> int:
        return self.manifest["files"][STRUCTURE]["bytes"]

    def size(self) -> dict:
        """As :meth:`VectorIndex.size`, plus ``code_bytes_per_doc``: the codes alone, without the codebooks."""
        return {**super().size(), "code_bytes_per_doc": self.spec.code_bytes()}

    def searcher(self, nprobe: int | None = None) -> AnnSearcher:
        spec = self.spec if nprobe is None else dataclasses.replace(self.spec, nprobe=nprobe)
        path = Path(self.path) / STRUCTURE
        return AnnSearcher(spec, lambda: (faiss.read_index(str(path)), self.manifest["report"], path), self)

    def retriever(self, num_results: int = 1000, *, nprobe: int | None = None, check_encoder: bool = True):
        """Approximate top ``num_results`` from the codes alone: ``enc >> pq_index.retriever()``."""
        from ..stages.dense_retriever import DenseRetriever
        return DenseRetriever(self, num_results=num_results, check_encoder=check_encoder, searcher=self.searcher(nprobe))


def build_pq_index(dense_index, path: str | os.PathLike, spec: PqSpec, *, train_size: int = 100_000,
                   mode: str = "error") -> PQIndex:
    """Write a PQIndex of ``dense_index``'s vectors at ``path`` (atomically, like every index)."""
    spec.validate(dense_index.dim, dense_index.count)
    with IndexBuild(path, artifact_type=TYPE, artifact_format=FORMAT, mode=mode) as build:
        structure, report = build_structure(dense_index.vectors, spec, train_size=train_size, seed=spec.seed)
        faiss.write_index(structure, str(build.tmp / STRUCTURE))
        shutil.copyfile(Path(dense_index.path) / "docnos.npy", build.tmp / "docnos.npy")
        build.publish({"count": dense_index.count, "dim": dense_index.dim, "encoder": dense_index.encoder_settings,
                       "source": str(dense_index.path), "report": report})
    return PQIndex(path)
