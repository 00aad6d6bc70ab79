"""What to build with FAISS: HNSW graphs, IVF inverted files, and product quantisers (PQ / OPQ / IVF-PQ, fast-scan).

A spec splits its parameters into *build* parameters (they change the structure, so they key its cache) and
*search* parameters (``ef_search``, ``nprobe``), which change per retriever without a rebuild. ``validate`` rejects
bad parameters before any work starts.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import faiss

__all__ = ["HnswSpec", "IvfSpec", "PqSpec", "as_dict", "check_training_points", "FAISS_MIN_POINTS_PER_CENTROID"]

FAISS_MIN_POINTS_PER_CENTROID = 39  # below this FAISS' k-means warns that centroids are poorly trained


def default_nlist(count: int) -> int:
    """4 * sqrt(n) lists (FAISS' rule of thumb), at least 1 and at most n / 39 so each list is trainable."""
    return max(1, min(int(4 * math.sqrt(max(count, 1))), max(1, count // FAISS_MIN_POINTS_PER_CENTROID)))


def _check_nlist(nlist: int, count: int) -> None:
    if nlist < 1:
        raise ValueError(f"nlist must be >= 1, got {nlist}")
    if count and nlist > count:   # an empty index is never trained: its searches return nothing
        raise ValueError(f"nlist={nlist} is larger than the corpus ({count} documents): use nlist <= {count}")


def _seed_clustering(cp, seed: int) -> None:
    """Seed one FAISS k-means. Its warning about too few points, printed once per codebook (96 lines for PQ96),
    is silenced: :func:`build_structure` logs the shortfall once and records it in the build report."""
    cp.seed = seed
    cp.min_points_per_centroid = 1


def check_training_points(spec, count: int, available: int, where: str) -> None:
    """k-means cannot make more centroids than it has points: fail with the numbers instead of inside FAISS."""
    needed = spec.min_train_points(count)
    if available and available < needed:
        raise ValueError(f"{spec} needs at least {needed} training vectors (one per centroid), but {where} "
                         f"{available}: {spec.TRAINING_ADVICE}")


@dataclass(frozen=True)
class HnswSpec:
    """HNSW graph (Malkov & Yashunin) over full vectors: ``m`` links per node, ``ef_construction`` build beam."""
    m: int = 32
    ef_construction: int = 200
    ef_search: int = 128
    kind: str = field(default="hnsw", init=False)

    def build_params(self) -> dict:
        return {"m": self.m, "ef_construction": self.ef_construction}

    def validate(self, dim: int, count: int) -> None:
        if self.m < 2:
            raise ValueError(f"HNSW m must be >= 2, got {self.m}")
        if self.ef_construction < 1 or self.ef_search < 1:
            raise ValueError("ef_construction and ef_search must be >= 1")

    def create(self, dim: int, count: int) -> faiss.Index:
        index = faiss.IndexHNSWFlat(dim, self.m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = self.ef_construction
        return index

    def train(self, index: faiss.Index, sample) -> None:
        index.train(sample)

    def min_train_points(self, count: int) -> int:
        return 0

    def train_points_needed(self, count: int) -> int:
        return 0

    def search_params(self, k: int):
        return faiss.SearchParametersHNSW(efSearch=max(self.ef_search, k))

    def __str__(self) -> str:
        return f"HNSW(m={self.m}, ef_construction={self.ef_construction})"


@dataclass(frozen=True)
class IvfSpec:
    """Inverted file over full vectors: ``nlist`` k-means lists (default 4 sqrt(n)), ``nprobe`` lists searched."""
    nlist: int | None = None
    nprobe: int = 16
    seed: int = 0
    kind: str = field(default="ivf", init=False)

    def lists(self, count: int) -> int:
        return self.nlist if self.nlist is not None else default_nlist(count)

    def build_params(self) -> dict:
        return {"nlist": self.nlist, "seed": self.seed}

    def validate(self, dim: int, count: int) -> None:
        _check_nlist(self.lists(count), count)
        if self.nprobe < 1:
            raise ValueError(f"nprobe must be >= 1, got {self.nprobe}")

    def create(self, dim: int, count: int) -> faiss.Index:
        index = faiss.index_factory(dim, f"IVF{self.lists(count)},Flat", faiss.METRIC_INNER_PRODUCT)
        _seed_clustering(index.cp, self.seed)
        return index

    def train(self, index: faiss.Index, sample) -> None:
        index.train(sample)

    TRAINING_ADVICE = "use a smaller nlist or a larger train_size"

    def min_train_points(self, count: int) -> int:
        """The fewest training vectors FAISS accepts: one per list."""
        return self.lists(count)

    def train_points_needed(self, count: int) -> int:
        return FAISS_MIN_POINTS_PER_CENTROID * self.lists(count)

    def search_params(self, k: int):
        return faiss.SearchParametersIVF(nprobe=self.nprobe)

    def __str__(self) -> str:
        return f"IVF(nlist={self.nlist or 'auto'})"


QUANTIZERS = ("pq", "rq")
RQ_BEAM = 1   # greedy residual encoding: measured on SciFact, as accurate as a beam of 5 and 2.5x faster to train


@dataclass(frozen=True)
class PqSpec:
    """Product quantiser (Jégou et al. 2010): ``m`` sub-quantisers of ``nbits`` (8, or 4 = FAISS fast-scan SIMD
    look-ups), optional OPQ rotation (Ge et al. 2013) and IVF coarse quantiser (``nlist``); asymmetric distances.

    ``quantizer="rq"`` uses a residual quantiser instead (``m`` full-dimension codebooks applied in turn to what
    the previous ones left; an additive quantiser, searched by the same look-up tables): at the same code size it
    keeps more of the exact top 100 (SciFact, 48 bytes: 0.87 against OPQ's 0.83), at a longer training.
    ``opq_iterations`` is OPQ's alternating optimisation (FAISS's default, 50); training time grows with it."""
    m: int = 48
    nbits: int = 8
    opq: bool = False
    nlist: int | None = None
    nprobe: int = 16
    seed: int = 0
    opq_iterations: int = 50
    quantizer: str = "pq"
    kind: str = field(default="pq", init=False)

    def build_params(self) -> dict:
        params = {"m": self.m, "nbits": self.nbits, "opq": self.opq, "nlist": self.nlist, "seed": self.seed}
        if self.opq:
            params["opq_iterations"] = self.opq_iterations
            params["opq_trained_for_nbits"] = self.nbits
        if self.quantizer != "pq":   # absent for PQ, so the cache keys of PQ structures stay what they were
            params.update(quantizer=self.quantizer, rq_beam=RQ_BEAM)
        return params

    def factory(self, dim: int) -> str:
        parts = [f"OPQ{self.m}"] if self.opq else []
        if self.nlist:
            parts.append(f"IVF{self.nlist}")
        parts.append(f"{self.quantizer.upper()}{self.m}x{self.nbits}" + ("fs" if self.nbits == 4 else ""))
        return ",".join(parts)

    def validate(self, dim: int, count: int) -> None:
        if self.quantizer not in QUANTIZERS:
            raise ValueError(f"quantizer must be one of {QUANTIZERS}, got {self.quantizer!r}")
        if self.nbits not in (4, 8):
            raise ValueError(f"nbits must be 8 or 4 (fast-scan), got {self.nbits}")
        if self.quantizer == "rq":
            if self.opq or self.nlist is not None:
                raise ValueError("quantizer='rq' takes neither opq nor nlist; use quantizer='pq' for OPQ or IVF-PQ")
            if self.m < 1:
                raise ValueError(f"m must be >= 1, got {self.m}")
        elif self.m < 1 or dim % self.m:
            raise ValueError(f"m={self.m} does not divide the vector dimension {dim}: choose a divisor of {dim}")
        if self.nlist is not None:
            _check_nlist(self.nlist, count)
        if self.nprobe < 1:
            raise ValueError(f"nprobe must be >= 1, got {self.nprobe}")
        check_training_points(self, count, count, "the index holds")

    def create(self, dim: int, count: int) -> faiss.Index:
        index = faiss.index_factory(dim, self.factory(dim), faiss.METRIC_INNER_PRODUCT)
        if self.opq:
            faiss.downcast_VectorTransform(index.chain.at(0)).niter = self.opq_iterations
        inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexPreTransform) else index
        if hasattr(inner, "cp"):
            _seed_clustering(inner.cp, self.seed)
        pq = getattr(inner, "pq", None)
        if pq is not None:
            _seed_clustering(pq.cp, self.seed)
        if hasattr(inner, "do_polysemous_training"):
            # FAISS' factory turns on polysemous training for 8-bit PQ: it only renumbers centroids for Hamming
            # filtering, which we never use (same search results), and took 84 of 90 s training PQ48x8 on SciFact
            inner.do_polysemous_training = False
        rq = getattr(inner, "rq", None)
        if rq is not None:
            _seed_clustering(rq.cp, self.seed)
            rq.max_beam_size = RQ_BEAM
        return index

    def train(self, index: faiss.Index, sample) -> None:
        if not self.opq:
            index.train(sample)
            return
        # FAISS trains the OPQ rotation against an 8-bit quantiser unless given one; give it the codes actually used
        # (4-bit fast-scan included). The rotation keeps a raw pointer, used only while training.
        opq = faiss.downcast_VectorTransform(index.chain.at(0))
        rotation_pq = faiss.ProductQuantizer(opq.d_out, self.m, self.nbits)
        _seed_clustering(rotation_pq.cp, self.seed)
        opq.pq = rotation_pq
        try:
            index.train(sample)
        finally:
            opq.pq = None

    TRAINING_ADVICE = "use nbits=4, fewer lists, or more documents"

    def min_train_points(self, count: int) -> int:
        """The fewest training vectors FAISS accepts: one per centroid of a codebook (and per IVF list)."""
        return max(2 ** self.nbits, self.nlist or 0)

    def train_points_needed(self, count: int) -> int:
        needed = FAISS_MIN_POINTS_PER_CENTROID * 2 ** self.nbits
        if self.nlist:
            needed = max(needed, FAISS_MIN_POINTS_PER_CENTROID * self.nlist)
        return needed

    def search_params(self, k: int):
        return faiss.SearchParametersIVF(nprobe=self.nprobe) if self.nlist else None

    def code_bytes(self) -> float:
        return self.m * self.nbits / 8

    def __str__(self) -> str:
        return f"{self.quantizer.upper()}({self.factory(0)})"


def as_dict(spec) -> dict:
    return {"kind": spec.kind, **spec.build_params()}
