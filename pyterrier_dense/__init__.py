"""pyterrier-dense: neural retrieval as PyTerrier pipelines.

Example::

    import pyterrier as pt, pyterrier_dense as ptd
    collection = ptd.Collection("../shared/data/scifact")
    enc, index = ptd.BiEncoder(), ptd.DenseIndex("scifact.dense")
    (enc >> index.indexer()).index(collection.corpus_iter())
    dense = enc >> index.retriever(num_results=1000)
"""
__version__ = "0.1.0"

from .collection import Collection
from .artifacts.colbert_index import ColBERTIndex
from .artifacts.dense_index import DenseIndex
from .artifacts.pq_index import PQIndex
from .artifacts.qdrant_index import QdrantIndex
from .artifacts.sparse_index import SparseIndex
from .stages.fusion import RRFusion, ScoreFusion
from .stages.sharded import ShardedRetriever
from .stages.text_loader import TextLoader

_NEED_TORCH = {"BiEncoder": ".stages.bi_encoder", "BiEncoderModel": ".models.bi_encoder_model",
               "ColBERT": ".stages.colbert", "ColBERTModel": ".models.colbert_model",
               "CrossEncoder": ".stages.cross_encoder", "CrossEncoderModel": ".models.cross_encoder_model",
               "Splade": ".stages.splade", "SpladeModel": ".models.splade_model"}


def __getattr__(name):
    # model classes load torch; importing them lazily lets a process open and search indexes without torch
    if name in ("ray", "training"):   # Ray is an optional extra; training loads torch: both imported when used
        import importlib
        return importlib.import_module(f".{name}", __name__)
    if name in _NEED_TORCH:
        import importlib
        return getattr(importlib.import_module(_NEED_TORCH[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = ["BiEncoder", "BiEncoderModel", "ColBERT", "ColBERTModel", "CrossEncoder", "CrossEncoderModel", "Splade",
           "SpladeModel", "ColBERTIndex", "DenseIndex", "PQIndex", "QdrantIndex", "SparseIndex", "Collection", "ScoreFusion", "RRFusion",
           "ShardedRetriever", "TextLoader", "__version__"]
