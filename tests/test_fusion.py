"""stages/fusion: score interpolation and reciprocal-rank fusion against hand-computed values."""
import re
import warnings

import pandas as pd
import pyterrier as pt
import pytest

import pyterrier_dense as ptd

TOPICS = pd.DataFrame({"qid": ["1", "2"], "query": ["a", "b"]})


def run(rows):
    return pt.Transformer.from_df(pd.DataFrame(rows, columns=["qid", "docno", "score"]), uniform=True)


SPARSE = run([("1", "x", 10.0), ("1", "y", 6.0), ("1", "z", 2.0), ("2", "x", 5.0)])
DENSE = run([("1", "y", 0.9), ("1", "w", 0.5), ("1", "x", 0.1), ("2", "w", 0.3), ("2", "x", 0.2)])


def scores(frame, qid):
    return frame[frame.qid == qid].set_index("docno")["score"].to_dict()


def test_minmax_interpolation_by_hand():
    out = ptd.ScoreFusion(SPARSE, DENSE, weights=[0.25, 0.75], norm="minmax")(TOPICS)
    # sparse q1: x=1, y=0.5, z=0 (w missing -> 0); dense q1: y=1, w=0.5, x=0 (z missing -> 0)
    assert scores(out, "1") == pytest.approx({"x": 0.25, "y": 0.25 * 0.5 + 0.75, "w": 0.75 * 0.5, "z": 0.0})
    # q2: a single sparse document maps to 1; dense x=0 w=1
    assert scores(out, "2") == pytest.approx({"x": 0.25, "w": 0.25 + 0.75})
    assert out[out.qid == "1"]["docno"].tolist() == ["y", "w", "x", "z"]
    assert out[out.qid == "1"]["rank"].tolist() == [0, 1, 2, 3]
    assert (out[out.qid == "2"]["query"] == "b").all()


def test_zscore_interpolation_by_hand():
    out = ptd.ScoreFusion(SPARSE, DENSE, norm="zscore")(TOPICS)
    sd = pd.Series([10.0, 6.0, 2.0]).std(ddof=0)
    dd = pd.Series([0.9, 0.5, 0.1]).std(ddof=0)
    z_s = {"x": 4 / sd, "y": 0.0, "z": -4 / sd}
    z_d = {"y": 0.4 / dd, "w": 0.0, "x": -0.4 / dd}
    expected = {d: z_s.get(d, min(z_s.values())) + z_d.get(d, min(z_d.values())) for d in "xyzw"}
    assert scores(out, "1") == pytest.approx(expected)


def test_reciprocal_rank_fusion_by_hand():
    out = ptd.RRFusion(SPARSE, DENSE, k=60)(TOPICS)
    assert scores(out, "1") == pytest.approx({"x": 1 / 61 + 1 / 63, "y": 1 / 62 + 1 / 61, "z": 1 / 63, "w": 1 / 62})
    assert scores(out, "2") == pytest.approx({"x": 1 / 61 + 1 / 62, "w": 1 / 61})


def test_num_results_and_bad_arguments():
    out = ptd.RRFusion(SPARSE, DENSE, num_results=2)(TOPICS)
    assert out.groupby("qid").size().tolist() == [2, 2]
    with pytest.raises(ValueError, match="at least two stages"):
        ptd.RRFusion(SPARSE)
    with pytest.raises(ValueError, match="3 weights given for 2 stages"):
        ptd.ScoreFusion(SPARSE, DENSE, weights=[1, 2, 3])
    with pytest.raises(ValueError, match="norm must be one of"):
        ptd.ScoreFusion(SPARSE, DENSE, norm="max")


def test_fusion_works_in_an_experiment():
    # sparse ranks y 2nd for q1 and misses w for q2; dense and the hybrid rank both first
    qrels = pd.DataFrame({"qid": ["1", "2"], "docno": ["y", "w"], "label": [1, 1]})
    res = pt.Experiment([SPARSE, DENSE, ptd.ScoreFusion(SPARSE, DENSE)], TOPICS, qrels, [pt.measures.RR],
                        names=["sparse", "dense", "hybrid"])
    assert res.set_index("name")["RR"].to_dict() == pytest.approx({"sparse": 0.25, "dense": 1.0, "hybrid": 1.0})


# ---- output columns ---------------------------------------------------------------------------------------------
def with_docid(rows):
    frame = pd.DataFrame(rows, columns=["qid", "docno", "score"])
    return pt.Transformer.from_df(frame.assign(docid=frame["docno"].map({"x": 0, "y": 1, "z": 2, "w": 3})), uniform=True)


@pytest.mark.parametrize("fusion", [ptd.ScoreFusion, ptd.RRFusion])
def test_only_query_columns_are_carried(fusion):
    # a first-stage result frame as input (docid of its first row must not spread), with an extra query column
    first = pd.DataFrame({"qid": ["1", "1", "2"], "query": ["a", "a", "b"], "query_0": ["A", "A", "B"],
                          "docno": ["z", "x", "x"], "docid": [2, 0, 0], "score": [3.0, 2.0, 1.0], "rank": [0, 1, 0]})
    stages = (with_docid([("1", "x", 10.0), ("1", "y", 6.0), ("2", "x", 5.0)]),
              with_docid([("1", "y", 0.9), ("1", "w", 0.5), ("2", "w", 0.3)]))
    out = fusion(*stages)(first)
    assert list(out.columns) == ["qid", "query", "query_0", "docno", "score", "rank"]
    assert out.set_index("docno").loc["w", "query_0"].tolist() == ["A", "B"]
    assert fusion(*stages).transform_outputs(list(first.columns)) == list(out.columns)
    # a query frame keeps all its columns
    topics = TOPICS.assign(lang=["en", "de"])
    assert list(fusion(SPARSE, DENSE)(topics).columns) == ["qid", "query", "lang", "docno", "score", "rank"]


# ---- construction-time validation --------------------------------------------------------------------------------
@pytest.mark.parametrize("fusion", [ptd.ScoreFusion, ptd.RRFusion])
def test_a_stage_that_is_not_a_transformer_is_refused(fusion):
    with pytest.raises(TypeError, match=r"stage 1 must be a pt.Transformer, got str \('bm25'\)"):
        fusion(SPARSE, "bm25")


@pytest.mark.parametrize("weights", [[1.0, float("nan")], [float("inf"), 1.0], [1.0, "0.5"], [True, 1.0]])
def test_weights_must_be_finite_numbers(weights):
    with pytest.raises(ValueError, match=r"weights must be finite numbers, got"):
        ptd.ScoreFusion(SPARSE, DENSE, weights=weights)


@pytest.mark.parametrize("k", [0, -1, float("nan"), float("inf"), "60", None, True])
def test_rrf_k_must_be_finite_and_positive(k):
    with pytest.raises(ValueError, match=rf"k must be a finite number > 0, got {k!r}"):
        ptd.RRFusion(SPARSE, DENSE, k=k)


@pytest.mark.parametrize("fusion", [ptd.ScoreFusion, ptd.RRFusion])
@pytest.mark.parametrize("n", [0, -3, 2.5, None, "5", True, False])
def test_num_results_must_be_an_int_of_at_least_one(fusion, n):
    with pytest.raises(ValueError, match=rf"num_results must be an int >= 1, got {n!r}"):
        fusion(SPARSE, DENSE, num_results=n)


# ---- non-finite and empty stage outputs --------------------------------------------------------------------------
@pytest.mark.parametrize("fusion", [ptd.ScoreFusion, ptd.RRFusion])
@pytest.mark.parametrize("bad", [float("inf"), float("-inf"), float("nan")])
def test_non_finite_scores_are_an_error_naming_stage_qid_and_docno(fusion, bad):
    odd = run([("1", "y", 0.9), ("1", "w", bad), ("2", "w", 0.3)])
    with pytest.raises(ValueError, match=rf"stage 1 \({re.escape(repr(odd))}\) gave score {bad} for qid '1', docno 'w'"):
        fusion(SPARSE, odd)(TOPICS)


class Empty(pt.Transformer):
    """A retriever that finds nothing: an empty frame whose score column is object dtype."""

    def transform(self, inp):
        return pd.DataFrame(columns=["qid", "query", "docno", "score", "rank"])


@pytest.mark.parametrize("fusion", [ptd.ScoreFusion, ptd.RRFusion])
def test_an_empty_run_fuses(fusion):
    out = fusion(SPARSE, Empty(), weights=[2, 1])(TOPICS)
    assert out[["qid", "docno", "rank"]].values.tolist() == [["1", "x", 0], ["1", "y", 1], ["1", "z", 2], ["2", "x", 0]]
    none = fusion(Empty(), Empty())(TOPICS)
    assert len(none) == 0 and list(none.columns) == ["qid", "query", "docno", "score", "rank"]


# ---- equality, for shared pipeline prefixes ----------------------------------------------------------------------
def test_equal_fusions_are_equal_and_hash_alike():
    assert ptd.ScoreFusion(SPARSE, DENSE, weights=[1, 2]) == ptd.ScoreFusion(SPARSE, DENSE, weights=[1.0, 2.0])
    assert hash(ptd.RRFusion(SPARSE, DENSE, k=60)) == hash(ptd.RRFusion(SPARSE, DENSE, k=60.0))
    base = ptd.ScoreFusion(SPARSE, DENSE)
    for other in [ptd.ScoreFusion(DENSE, SPARSE), ptd.ScoreFusion(SPARSE, DENSE, weights=[1, 2]),
                  ptd.ScoreFusion(SPARSE, DENSE, norm="zscore"), ptd.ScoreFusion(SPARSE, DENSE, num_results=5),
                  ptd.RRFusion(SPARSE, DENSE)]:
        assert base != other
    assert ptd.RRFusion(SPARSE, DENSE, k=60) != ptd.RRFusion(SPARSE, DENSE, k=10)


class Counting(pt.Transformer):
    def __init__(self, inner):
        self.inner, self.calls = inner, 0

    def transform(self, inp):
        self.calls += 1
        return self.inner.transform(inp)


def test_experiment_shares_an_equal_fusion_prefix():
    counted = Counting(SPARSE)
    qrels = pd.DataFrame({"qid": ["1", "2"], "docno": ["y", "w"], "label": [1, 1]})
    systems = [ptd.ScoreFusion(counted, DENSE) % 1, ptd.ScoreFusion(counted, DENSE) % 2]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        pt.Experiment(systems, TOPICS, qrels, [pt.measures.RR], precompute_prefix=True)
    assert counted.calls == 1
