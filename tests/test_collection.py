"""collection: the shared layout, BEIR directories and zips, splits, text lookup, and bad paths."""
import collections
import json
import zipfile

import pyterrier as pt
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


# ---- irds: a fake dataset, no network -------------------------------------------------------------------------
FakeDoc = collections.namedtuple("FakeDoc", "doc_id title text")
IRDS_DOCS = [FakeDoc("d1", "Gene study", "about genes"), FakeDoc("d2", "", "light waves"), FakeDoc("d3", None, "heat")]


class FakeIrds:
    """What Collection uses of pt.get_dataset("irds:..."): get_corpus_iter() and irds_ref().docs_store()."""

    def get_corpus_iter(self):
        return iter([{"docno": d.doc_id, "title": d.title, "text": d.text} for d in IRDS_DOCS])

    def irds_ref(self):
        return self

    def docs_store(self):
        return self

    def docs_count(self):
        return len(IRDS_DOCS)

    def get_many_iter(self, doc_ids):   # like ir_datasets: file order, unknown ids silently dropped
        wanted = set(doc_ids)
        return (d for d in IRDS_DOCS if d.doc_id in wanted)


@pytest.fixture
def irds_collection(monkeypatch):
    monkeypatch.setattr(pt, "get_dataset", lambda name: FakeIrds())
    return ptd.Collection("irds:fake/test")


def test_irds_texts_follow_the_request_order(irds_collection):
    assert irds_collection.texts(["d3", "d1", "d3"]) == ["heat", "Gene study about genes", "heat"]


def test_irds_unknown_docno_is_named(irds_collection):
    with pytest.raises(KeyError, match="'nope' is not in the collection irds:fake/test"):
        irds_collection.texts(["d1", "nope"])


def test_irds_corpus_iter_joins_titles_like_texts(irds_collection):
    docs = list(irds_collection.corpus_iter())
    assert docs == [{"docno": "d1", "text": "Gene study about genes"}, {"docno": "d2", "text": "light waves"},
                    {"docno": "d3", "text": "heat"}]
    assert irds_collection.texts([d["docno"] for d in docs]) == [d["text"] for d in docs]


# ---- num_docs -------------------------------------------------------------------------------------------------
def test_num_docs(tmp_path, irds_collection):
    c = ptd.Collection(write_beir(tmp_path / "tiny"))
    assert c.num_docs() == 2
    with open(tmp_path / "tiny" / "corpus.jsonl", "a") as f:   # counted once, then cached
        f.write(json.dumps({"_id": "d3", "text": "more"}) + "\n")
    assert c.num_docs() == 2 and ptd.Collection(tmp_path / "tiny").num_docs() == 3
    assert irds_collection.num_docs() == 3


def test_corpus_iter_is_an_iterator_that_knows_its_size(tmp_path, irds_collection):
    docs = ptd.Collection(write_beir(tmp_path / "tiny")).corpus_iter()
    assert len(docs) == 2 and iter(docs) is docs
    assert next(docs)["docno"] == "d1" and len(docs) == 1
    assert [d["docno"] for d in docs] == ["d2"] and len(docs) == 0
    assert len(irds_collection.corpus_iter()) == 3


def test_corpus_iter_announces_its_size_to_an_indexer_only(tmp_path):
    from pyterrier_dense.stages.progress import expect_total
    c = ptd.Collection(write_beir(tmp_path / "tiny"))
    counted = []
    c.num_docs = lambda: counted.append(1) or 2
    next(c.corpus_iter())                       # peeking counts nothing
    assert counted == []
    with expect_total() as expected:
        docs = c.corpus_iter()
        assert expected.total is None           # announced when the first document is taken
        for _ in docs:
            pass
    assert expected.total == 2 and counted == [1]


# ---- malformed lines name the file, the line and the field ------------------------------------------------------
def write_local(root, corpus, queries=("{\"qid\": \"1\", \"query\": \"q\"}",), qrels=("1 0 a 1",)):
    root.mkdir()
    (root / "corpus.jsonl").write_text("\n".join(corpus) + "\n")
    (root / "queries.jsonl").write_text("\n".join(queries) + "\n")
    (root / "qrels.txt").write_text("\n".join(qrels) + "\n")
    return root


GOOD_DOC = json.dumps({"docno": "a", "text": "x"})


def test_corpus_line_without_id(tmp_path):
    local = ptd.Collection(write_local(tmp_path / "local", [GOOD_DOC, json.dumps({"text": "no id"})]))
    with pytest.raises(ValueError, match=r"local/corpus.jsonl line 2 has no 'docno'"):
        list(local.corpus_iter())
    beir = write_beir(tmp_path / "beir")
    with open(beir / "corpus.jsonl", "a") as f:
        f.write(json.dumps({"docno": "d3", "text": "local-style id"}) + "\n")
    with pytest.raises(ValueError, match=r"beir/corpus.jsonl line 3 has no '_id'"):
        list(ptd.Collection(beir).corpus_iter())


@pytest.mark.parametrize("line,field", [('{"query": "no id"}', "qid"), ('{"qid": "2"}', "query")])
def test_queries_line_without_a_field(tmp_path, line, field):
    c = ptd.Collection(write_local(tmp_path / "local", [GOOD_DOC], queries=['{"qid": "1", "query": "q"}', line]))
    with pytest.raises(ValueError, match=rf"local/queries.jsonl line 2 has no '{field}'"):
        c.topics()


def test_beir_queries_line_without_text(tmp_path):
    beir = write_beir(tmp_path / "beir")
    with open(beir / "queries.jsonl", "a") as f:
        f.write(json.dumps({"_id": "q3"}) + "\n")
    with pytest.raises(ValueError, match=r"beir/queries.jsonl line 3 has no 'text'"):
        ptd.Collection(beir).topics()


@pytest.mark.parametrize("line", ["1 0 b", "1 0 b yes"])
def test_malformed_trec_qrels_line(tmp_path, line):
    c = ptd.Collection(write_local(tmp_path / "local", [GOOD_DOC], qrels=["1 0 a 1", line]))
    with pytest.raises(ValueError, match=r"local/qrels.txt line 2 .*qid 0 docno label"):
        c.qrels()


@pytest.mark.parametrize("line", ["q1\td2", "q1\td2\tyes"])
def test_malformed_beir_qrels_line(tmp_path, line):
    beir = write_beir(tmp_path / "beir")
    with open(beir / "qrels" / "test.tsv", "a") as f:
        f.write(line + "\n")
    with pytest.raises(ValueError, match=r"beir/qrels/test.tsv line 3 .*query-id, corpus-id, score"):
        ptd.Collection(beir).qrels()


def test_documents_with_no_text_are_left_out_of_corpus_iter_with_a_warning(tmp_path, caplog):
    docs = [GOOD_DOC, json.dumps({"docno": "b", "title": " ", "text": ""}), json.dumps({"docno": "c", "title": "T"}),
            json.dumps({"docno": "d", "text": "\n"})]
    c = ptd.Collection(write_local(tmp_path / "local", docs))
    with caplog.at_level("WARNING", logger="pyterrier_dense"):
        assert [d["docno"] for d in c.corpus_iter()] == ["a", "c"]
    assert "local: 2 documents with no text left out of corpus_iter(): docno 'b', 'd'" in caplog.text
    assert c.texts(["b", "c"]) == ["", "T"]          # text lookup still knows them


def test_cranfield_indexes_without_its_two_empty_documents(caplog):
    c = ptd.Collection(shared_collection("cranfield"))
    with caplog.at_level("WARNING", logger="pyterrier_dense"):
        docnos = [d["docno"] for d in c.corpus_iter()]
    assert len(docnos) == 1398 and c.num_docs() == 1400 and not {"471", "995"} & set(docnos)
    assert "2 documents with no text left out of corpus_iter(): docno '471', '995'" in caplog.text
