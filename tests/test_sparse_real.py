"""The real SPLADE-tiny on SciFact: the issue's zero-shot figure through SparseIndex, re-scoring from stored weights,
and PISA serving the same top 100 as SparseIndex through pyterrier-pisa's own pipelines."""
import itertools

import pandas as pd
import pytest
from ir_measures import R, nDCG, calc_aggregate

import pyterrier_dense as ptd
from pyterrier_dense.stages.progress import quiet
from test_sparse_pisa import same_top

pytestmark = pytest.mark.slow


def measures(run, qrels) -> dict:
    m = calc_aggregate([nDCG @ 10, R @ 100], qrels.rename(columns={"qid": "query_id", "docno": "doc_id", "label": "relevance"}),
                       run.rename(columns={"qid": "query_id", "docno": "doc_id"})[["query_id", "doc_id", "score"]])
    return {"ndcg10": m[nDCG @ 10], "r100": m[R @ 100]}


@pytest.fixture(scope="module")
def scifact_splade(real_splade, scifact_indexes, tmp_path_factory):
    """SPLADE-tiny weights of SciFact (title + text at 256 tokens, fp32) in a SparseIndex."""
    splade = ptd.Splade(real_splade, precision="fp32", verbose=False)
    index = ptd.SparseIndex(tmp_path_factory.mktemp("scifact_splade") / "scifact.splade")
    with quiet():
        (splade.doc_encoder() >> index.indexer()).index(scifact_indexes.collection.corpus_iter())
    return splade, index, scifact_indexes.collection


def test_splade_tiny_reaches_the_issue_figure_on_scifact(scifact_splade):
    splade, index, coll = scifact_splade
    run = (splade.query_encoder() >> index.retriever(num_results=100))(coll.topics("test"))
    got = measures(run, coll.qrels("test"))
    assert got["ndcg10"] == pytest.approx(0.6436, abs=0.002) and got["r100"] == pytest.approx(0.893, abs=0.005), got
    assert 150 < index.size()["postings_per_doc"] < 350   # the issue measured 249 terms a document, unpruned


def test_bm25_candidates_rescored_from_stored_weights_score_as_retrieval_does(scifact_splade, scifact_indexes):
    splade, index, coll = scifact_splade
    topics = coll.topics("test").head(30)
    rescored = (scifact_indexes.bm25 % 100 >> splade.query_encoder() >> index.scorer())(topics)
    retrieved = (splade.query_encoder() >> index.retriever(num_results=index.count))(topics)
    both = rescored.merge(retrieved, on=["qid", "docno"], suffixes=("", "_retrieved"))
    assert len(both) > 0.9 * len(rescored)   # BM25's candidates nearly all share a term with the query's expansion
    assert (both.score - both.score_retrieved).abs().max() < 1e-4


def test_pisa_pipelines_serve_the_same_top_100_as_sparse_index(real_splade, scifact_indexes, tmp_path):
    pyterrier_pisa = pytest.importorskip("pyterrier_pisa")
    impacts = ptd.Splade(real_splade, scale=100, precision="fp32", verbose=False)   # integer weights, as PISA stores
    docs = list(itertools.islice(scifact_indexes.collection.corpus_iter(), 600))
    pisa = pyterrier_pisa.PisaIndex(str(tmp_path / "splade.pisa"), stemmer="none", threads=1)
    with quiet():
        (impacts.doc_encoder() >> pisa.toks_indexer(scale=1.0)).index(docs)
        ours = ptd.SparseIndex(tmp_path / "splade.sparse")
        ours.indexer().index(impacts.doc_encoder()(pd.DataFrame(docs)))
    topics = scifact_indexes.collection.topics("test").head(60)
    from_pisa = (impacts.query_encoder() >> pisa.quantized(num_results=100, toks_scale=1.0))(topics)
    same_top((impacts.query_encoder() >> ours.retriever(num_results=100))(topics), from_pisa)
