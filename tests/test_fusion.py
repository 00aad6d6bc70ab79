"""stages/fusion: score interpolation and reciprocal-rank fusion against hand-computed values."""
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
