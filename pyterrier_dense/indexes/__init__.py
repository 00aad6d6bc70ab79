"""Indexes: storage and search (numpy + FAISS). Nothing here imports torch or PyTerrier."""
from .ann_specs import HnswSpec, IvfSpec, PqSpec
from .dense_store import DenseIndexWriter, DenseSnapshot, open_dense
from .exact_search import exact_top_k
from .sparse_search import score_pairs, sparse_top_k
from .sparse_store import SparseIndexWriter, SparseSnapshot, open_sparse
from .storage import CorruptIndexError, IndexBuild, IndexExistsError, IndexLockedError
from .token_store import TokenIndexWriter, TokenSnapshot, open_tokens

__all__ = ["SparseIndexWriter", "SparseSnapshot", "open_sparse", "sparse_top_k", "score_pairs", "TokenIndexWriter", "TokenSnapshot", "open_tokens", "DenseIndexWriter", "DenseSnapshot", "open_dense", "HnswSpec", "IvfSpec", "PqSpec", "exact_top_k",
           "IndexBuild", "CorruptIndexError", "IndexExistsError", "IndexLockedError"]
