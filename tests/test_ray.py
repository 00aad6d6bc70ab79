"""Encoding on Ray (``ptd.ray.encode``): a local Ray with 2 CPU actors builds the same index as one process, resumes
an interrupted build encoding only the rest, survives an actor killed mid-shard without duplicating anything, and
reports the encoder's own errors."""
import os
import sys
from collections import Counter

import numpy as np
import pandas as pd
import pyterrier as pt
import pytest

ray = pytest.importorskip("ray", reason="encoding on Ray needs the ray extra: pip install 'pyterrier-dense[ray]'")
import ray.cloudpickle  # noqa: E402

import pyterrier_dense as ptd  # noqa: E402

WORDS = ["gene", "cell", "protein", "cancer", "field", "quantum", "light", "wave", "theory", "electron"]
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])   # the actors run this module's stages


def texts(n: int) -> list[dict]:
    rng = np.random.default_rng(0)
    return [{"docno": f"d{i}", "text": " ".join(rng.choice(WORDS, int(rng.integers(3, 30))))} for i in range(n)]


class Logged(pt.Transformer):
    """The encoder, appending the docnos it encodes to a file (actors are other processes), and killing its actor
    (``os._exit``, as a lost worker) the first time it meets ``die_at``."""

    def __init__(self, enc, log: str, die_at: str | None = None):
        self.enc, self.log, self.die_at = enc, log, die_at

    def transform_iter(self, inp):   # the indexing path, as the actors call it
        records = list(inp)
        if self.die_at in {r["docno"] for r in records} and not os.path.exists(self.log + ".died"):
            open(self.log + ".died", "w").close()
            os._exit(1)
        out = self.enc.transform_iter(records)
        with open(self.log, "a") as f:
            f.write("".join(r["docno"] + "\n" for r in records))
        return out

    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame(self.transform_iter(inp.to_dict(orient="records")))


def encoded(log: str) -> list[str]:
    return open(log).read().split() if os.path.exists(log) else []


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield ray
    ray.shutdown()


def one_process(enc, docs, path):
    return (enc >> ptd.DenseIndex(path).indexer()).index(docs)


def same_index(a, b) -> None:
    sa, sb = a.snapshot(), b.snapshot()
    assert list(sa.docnos) == list(sb.docnos)
    assert sa.encoder_settings == sb.encoder_settings
    # batches group documents differently (padding lengths differ): the last bit of fp32 may differ, no more
    np.testing.assert_allclose(np.asarray(sa.vectors), np.asarray(sb.vectors), rtol=0, atol=1e-6)


def test_two_actors_build_the_single_process_index(local_ray, tiny_encoder, tmp_path):
    docs = texts(300)
    index = ptd.ray.encode(docs, tiny_encoder, ptd.DenseIndex(tmp_path / "ray.dense").indexer(), actors=2,
                           batch_size=32, window=100)
    same_index(index, one_process(tiny_encoder, docs, tmp_path / "one.dense"))
    assert not [p for p in os.listdir(tmp_path / "ray.dense") if p.startswith("partial-")]


def test_default_batches_follow_the_encoders_sorting_window_and_encode_bit_for_bit(local_ray, tiny_st_model,
                                                                                   tmp_path):
    """By default the actors get the batches a single-process build sorts and pads together: the same vectors,
    bit for bit, in fp32."""
    enc = ptd.BiEncoder(tiny_st_model, precision="fp32", verbose=False)
    enc.model.chunk_size = 50      # PyTerrier hands the encoder 50 documents at a time (enc.batch_size)
    docs = texts(300)
    index = ptd.ray.encode(docs, enc, ptd.DenseIndex(tmp_path / "ray.dense").indexer(), actors=2)
    one = one_process(enc, docs, tmp_path / "one.dense")
    assert list(index.snapshot().docnos) == list(one.snapshot().docnos)
    np.testing.assert_array_equal(np.asarray(index.snapshot().vectors), np.asarray(one.snapshot().vectors))


def test_truncations_are_reported_once_per_actor(local_ray, tiny_encoder, tmp_path, caplog):
    docs = [{"docno": f"d{i}", "text": " ".join(["gene"] * (100 if i % 3 == 0 else 5))} for i in range(30)]
    with caplog.at_level("WARNING", logger="pyterrier_dense"):
        ptd.ray.encode(docs, tiny_encoder, ptd.DenseIndex(tmp_path / "ray.dense").indexer(), actors=2, batch_size=5)
    warned = [r.getMessage() for r in caplog.records if "truncated" in r.getMessage()]
    assert 1 <= len(warned) <= 2 and all(m.startswith("Ray actor") for m in warned)
    assert sum(int(m.split(": ")[1].split(" of ")[0]) for m in warned) == 10


def test_token_vectors_too(local_ray, tiny_colbert_ir_model, tmp_path):
    colbert = ptd.ColBERT(tiny_colbert_ir_model, precision="fp32", verbose=False)
    docs = texts(60)
    index = ptd.ray.encode(pd.DataFrame(docs), colbert, ptd.ColBERTIndex(tmp_path / "ray.colbert").indexer(),
                           actors=2, batch_size=16)
    ref = (colbert >> ptd.ColBERTIndex(tmp_path / "one.colbert").indexer()).index(docs)
    topics = pd.DataFrame({"qid": ["q1", "q2"], "query": ["gene cell", "quantum light wave"]})
    ours, theirs = (colbert >> index.retriever(num_results=10))(topics), (colbert >> ref.retriever(num_results=10))(topics)
    assert ours["docno"].tolist() == theirs["docno"].tolist()
    np.testing.assert_allclose(ours["score"], theirs["score"], atol=1e-3)


def test_a_ray_dataset_is_read_in_order(local_ray, tiny_encoder, tmp_path):
    docs = texts(120)
    index = ptd.ray.encode(ray.data.from_items(docs), tiny_encoder, ptd.DenseIndex(tmp_path / "ray.dense").indexer(),
                           actors=2, batch_size=16, window=50)
    same_index(index, one_process(tiny_encoder, docs, tmp_path / "one.dense"))


def test_an_actor_killed_mid_shard_is_restarted_and_nothing_is_duplicated(local_ray, tiny_encoder, tmp_path):
    docs, log = texts(200), str(tmp_path / "log")
    stage = Logged(tiny_encoder, log, die_at="d70")
    index = ptd.ray.encode(docs, stage, ptd.DenseIndex(tmp_path / "ray.dense").indexer(shard_size=50), actors=2,
                           batch_size=20)
    assert os.path.exists(log + ".died")                  # an actor did die, holding d60-d79
    counts = Counter(encoded(log))
    assert set(counts) == {d["docno"] for d in docs}      # its batch ran once more, on the restarted actor
    # Ray runs an actor's task again when the actor dies before the reply reaches the driver (a loaded machine
    # widens that window): at most the batches the dead actor held, never a document twice in the index
    again = [d for d, c in counts.items() if c > 1]
    assert max(counts.values()) <= 2 and len(again) <= 40
    assert index.snapshot().count == 200
    same_index(index, one_process(tiny_encoder, docs, tmp_path / "one.dense"))


def test_an_interrupted_build_resumes_encoding_only_the_rest(local_ray, tiny_encoder, tmp_path):
    docs, log = texts(400), str(tmp_path / "log")

    def interrupted():
        for i, d in enumerate(docs):
            if i == 300:
                raise KeyboardInterrupt
            yield d
    path = tmp_path / "ray.dense"
    with pytest.raises(KeyboardInterrupt):
        ptd.ray.encode(interrupted(), Logged(tiny_encoder, log), ptd.DenseIndex(path).indexer(shard_size=50),
                       actors=2, batch_size=25, window=60)
    assert not ptd.DenseIndex(path).exists()
    rerun_log = str(tmp_path / "rerun-log")   # (the first run's actors, killed asynchronously, may log a little more)
    index = ptd.ray.encode(docs, Logged(tiny_encoder, rerun_log), ptd.DenseIndex(path).indexer(shard_size=50),
                           actors=2, batch_size=25, window=60)
    again = sorted(encoded(rerun_log), key=lambda d: int(d[1:]))   # two actors log in either order
    # the driver reads ahead of the indexer (at most 8 batches of 25), so at least 100 documents were in complete
    # shards when the input broke off: the re-run encodes only what follows the last complete shard
    resumed_at = len(docs) - len(again)
    assert resumed_at >= 100 and resumed_at % 50 == 0
    assert again == [f"d{i}" for i in range(resumed_at, 400)]
    same_index(index, one_process(tiny_encoder, docs, tmp_path / "one.dense"))


def test_the_encoders_error_names_the_document(local_ray, tiny_encoder, tmp_path):
    docs = texts(40)
    docs[33]["text"] = ""
    with pytest.raises(ValueError, match="d33"):
        ptd.ray.encode(docs, tiny_encoder, ptd.DenseIndex(tmp_path / "ray.dense").indexer(), actors=2, batch_size=10)
    assert not ptd.DenseIndex(tmp_path / "ray.dense").exists()


def test_bad_arguments_fail_before_starting_anything(tiny_encoder, tmp_path):
    indexer = ptd.DenseIndex(tmp_path / "x.dense").indexer()
    with pytest.raises(ValueError, match="actors"):
        ptd.ray.encode([], tiny_encoder, indexer, actors=0)
    with pytest.raises(TypeError, match="indexer"):
        ptd.ray.encode([], tiny_encoder, "x.dense")
    with pytest.raises(TypeError, match="encoder"):
        ptd.ray.encode([], 3, indexer)
