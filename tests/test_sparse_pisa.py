"""PISA interop: the same integer weights give the same top-100 in PISA (native, pyterrier-pisa) and SparseIndex."""
from __future__ import annotations

import numpy as np
import pytest

import pyterrier_dense as ptd
from test_sparse_index import corpus, queries

pyterrier_pisa = pytest.importorskip("pyterrier_pisa", reason="PISA interop needs pyterrier-pisa (the test extra)")


def same_top(ours, pisa) -> None:
    """Rank by rank the same scores, and the same documents above the last score (ties at the cut may differ)."""
    assert set(ours.qid) == set(pisa.qid)
    for qid, a in ours.groupby("qid"):
        b = pisa[pisa.qid == qid].sort_values("rank")
        a = a.sort_values("rank")
        np.testing.assert_allclose(a.score.to_numpy(), b.score.to_numpy(), rtol=1e-6, err_msg=qid)
        cut = a.score.iloc[-1]
        assert set(a.docno[a.score > cut]) == set(b.docno[b.score > cut]), qid


def test_pisa_and_sparse_index_agree_on_integer_weights(tmp_path):
    docs = corpus(1500, seed=11, integer=True)
    pisa = pyterrier_pisa.PisaIndex(str(tmp_path / "p.pisa"), stemmer="none", threads=1)
    pisa.toks_indexer(scale=1.0).index(docs)   # weights already integers: no further scaling
    ours = ptd.SparseIndex(tmp_path / "o.splade")
    ours.indexer().index(docs)
    qs = queries(25, seed=12, integer=True)
    same_top(ours.retriever(num_results=100)(qs), pisa.quantized(num_results=100, toks_scale=1.0)(qs))
