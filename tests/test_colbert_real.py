"""Zero-shot ColBERT over the real MiniLM on SciFact: MaxSim re-ranking of BM25 (the issue's 0.71 figure), text and
index re-ranking agreeing, and PLAID retrieval recovering exhaustive MaxSim's top 100."""
import numpy as np
import pytest
from ir_measures import nDCG, calc_aggregate

import pyterrier_dense as ptd
from pyterrier_dense.stages.progress import quiet

pytestmark = pytest.mark.slow


def ndcg10(run, qrels) -> float:
    return calc_aggregate([nDCG @ 10], qrels.rename(columns={"qid": "query_id", "docno": "doc_id", "label": "relevance"}),
                          run.rename(columns={"qid": "query_id", "docno": "doc_id"})[["query_id", "doc_id", "score"]])[nDCG @ 10]


@pytest.fixture(scope="module")
def scifact_colbert(scifact_indexes, minilm, tmp_path_factory):
    """MiniLM zero-shot token vectors of SciFact in a float16 ColBERT index (about 2 minutes of encoding)."""
    colbert = ptd.ColBERT(minilm, verbose=False)
    index = ptd.ColBERTIndex(tmp_path_factory.mktemp("scifact_colbert") / "scifact.colbert")
    with quiet():
        (colbert >> index.indexer()).index(scifact_indexes.collection.corpus_iter())
    coll = scifact_indexes.collection
    first = (scifact_indexes.bm25 % 100)(coll.topics("test"))
    return colbert, index, first, coll.qrels("test")


def test_maxsim_reranking_of_bm25_reaches_the_zero_shot_figure(scifact_colbert):
    colbert, index, first, qrels = scifact_colbert
    reranked = (colbert.query_encoder() >> index.scorer())(first)
    assert ndcg10(first, qrels) < 0.69 and ndcg10(reranked, qrels) >= 0.705   # issue: 0.6776 -> 0.7127 (fp32)


def test_text_reranking_ranks_as_the_index_does(scifact_colbert, scifact_indexes):
    colbert, index, first, _ = scifact_colbert
    some = first[first.qid.isin(first.qid.unique()[:8])]
    by_text = (scifact_indexes.collection.text_loader() >> colbert)(some)
    by_index = (colbert.query_encoder() >> index.scorer())(some)
    for qid in some.qid.unique():
        a = by_text[by_text.qid == qid].docno.tolist()[:10]
        b = by_index[by_index.qid == qid].docno.tolist()[:10]
        assert len(set(a) & set(b)) >= 9   # float16 storage may swap near-ties
    merged = by_text.merge(by_index, on=["qid", "docno"])
    assert np.abs(merged.score_x - merged.score_y).max() < 0.05


def test_plaid_recovers_the_exhaustive_top_100(scifact_colbert):
    colbert, index, first, qrels = scifact_colbert
    topics = first.drop_duplicates("qid")[["qid", "query"]].head(40)
    q = colbert.query_encoder()(topics)
    exact = index.exhaustive_retriever(num_results=100)(q)
    e2e = index.retriever(num_results=100)(q)
    recall = np.mean([len(set(e2e[e2e.qid == x].docno) & set(exact[exact.qid == x].docno)) / 100
                      for x in topics.qid])
    assert recall >= 0.94   # measured 0.957 on these 40 queries (0.95 is the target over all 300, benchmarks/colbert.py)


def test_queries_pruned_to_8_tokens_by_coverage_keep_the_reranking_figure(scifact_colbert):
    colbert, index, first, qrels = scifact_colbert
    full = ndcg10((colbert.query_encoder() >> index.scorer())(first), qrels)
    pruned = colbert.query_encoder(prune_to=8, frequencies=index)
    by_icf = colbert.query_encoder(prune_to=8, frequencies=index, prune_by="icf")
    kept = (pruned >> index.scorer())(first)
    assert ndcg10(kept, qrels) >= full - 0.01           # measured 0.7124 against 0.7122 (the issue: within 0.02)
    assert ndcg10((by_icf >> index.scorer())(first), qrels) < ndcg10(kept, qrels)   # 0.6881
    assert max(len(e) for e in pruned(first.drop_duplicates("qid")).query_embs) <= 8 + 2   # + [CLS], [SEP]
