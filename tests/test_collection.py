"""collection: the shared layout, BEIR directories and zips, splits, text lookup, and bad paths."""
import json
import zipfile

import pytest

import pyterrier_dense as ptd
from conftest import shared_collection


def write_beir(root):
    root.mkdir()
    (root / "qrels").mkdir()
    with open(root / "corpus.jsonl", "w") as f:
        f.write(json.dumps({"_id": "d1", "title": "Gene study", "text": "about genes"}) + "\n")
        f.write(json.dumps({"_id": "d2", "title": "", "text": "light waves"}) + "\n")
    with open(root / "queries.jsonl", "w") as f:
        f.write(json.dumps({"_id": "q1", "text": "genes?"}) + "\n" + json.dumps({"_id": "q2", "text": "unjudged"}) + "\n")
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    return root


def test_shared_layout_with_splits():
    c = ptd.Collection(shared_collection("scifact"))
    assert len(c.topics()) == 300 and len(c.qrels()) == 339
    assert len(c.topics("train")) == 809 and set(c.qrels("train").columns) == {"qid", "docno", "label"}
    first = next(c.corpus_iter())
    raw = json.loads(open(shared_collection("scifact") / "corpus.jsonl").readline())
    assert first == {"docno": raw["docno"], "text": f"{raw['title']} {raw['text']}"}
    assert c.texts([raw["docno"]]) == [first["text"]]
    with pytest.raises(FileNotFoundError, match="queries.dev.jsonl"):
        c.topics("dev")
    with pytest.raises(KeyError, match="'nope' is not in the collection"):
        c.texts(["nope"])


@pytest.mark.parametrize("zipped", [False, True])
def test_beir_directory_and_zip(tmp_path, zipped):
    root = write_beir(tmp_path / "tiny")
    source = root
    if zipped:
        source = tmp_path / "tiny.zip"
        with zipfile.ZipFile(source, "w") as z:
            for p in root.rglob("*"):
                if p.is_file():
                    z.write(p, f"tiny/{p.relative_to(root)}")
    c = ptd.Collection(source)
    assert list(c.corpus_iter()) == [{"docno": "d1", "text": "Gene study about genes"}, {"docno": "d2", "text": "light waves"}]
    assert c.topics().to_dict("records") == [{"qid": "q1", "query": "genes?"}]  # only judged queries
    assert c.qrels().to_dict("records") == [{"qid": "q1", "docno": "d1", "label": 1}]
    loaded = c.text_loader()(c.qrels())
    assert loaded["text"].tolist() == ["Gene study about genes"]


def test_bad_paths_give_one_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no collection at"):
        ptd.Collection(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="has no corpus.jsonl"):
        ptd.Collection(tmp_path / "empty")
