"""Collection: corpus, topics, qrels and docno -> text for a local directory, a BEIR directory/zip, or ``irds:``."""
from __future__ import annotations

import io
import json
import logging
import os
import zipfile
from pathlib import Path
from typing import Callable, Iterator, Sequence

import pandas as pd

from .stages.progress import announce_total

__all__ = ["Collection", "CorpusIter"]

log = logging.getLogger("pyterrier_dense")


def _join(title, text) -> str:
    title, text = (title or "").strip(), (text or "").strip()
    return f"{title} {text}".strip() if title else text


class CorpusIter(Iterator[dict]):
    """The documents of a collection, one pass: an iterator that also knows how many documents it has left.

    ``len()`` counts the corpus (once per collection). When the first document is taken, it tells an indexer
    downstream how many to expect (:func:`~pyterrier_dense.stages.progress.announce_total`), so the indexing bar of
    ``(enc >> index.indexer()).index(collection.corpus_iter())`` shows n/total and the time left, although
    PyTerrier hands the indexer a generator of its own.
    """

    def __init__(self, docs: Iterator[dict], count: Callable[[], int]):
        self._docs, self._count, self._taken = docs, count, 0

    def __iter__(self) -> "CorpusIter":
        return self

    def __next__(self) -> dict:
        if not self._taken:
            announce_total(self._count)
        doc = next(self._docs)
        self._taken += 1
        return doc

    def __len__(self) -> int:
        return max(self._count() - self._taken, 0)


class Collection:
    """A test collection, whatever its layout.

    - a directory in the ``shared/data`` layout: ``corpus.jsonl`` (docno/title/text), ``queries[.split].jsonl``
      (qid/query), ``qrels[.split].txt`` (TREC);
    - a BEIR directory or zip: ``corpus.jsonl`` (_id/title/text), ``queries.jsonl``, ``qrels/<split>.tsv``;
    - ``irds:<id>`` through ``pt.get_dataset`` (needs internet the first time).

    Titles are joined to texts (``"title text"``) for indexing and text lookup, in ``corpus_iter()`` and
    ``texts()`` alike; ``corpus_iter()`` leaves out documents with no text, with a warning. ``num_docs()`` gives the
    corpus size (counted once). A malformed line of a corpus, queries or qrels file is a ValueError naming the
    file, the line number and the missing field.

    Example::

        c = ptd.Collection("../shared/data/scifact")
        (enc >> index.indexer()).index(c.corpus_iter())
        pt.Experiment([dense], c.topics(), c.qrels(), [pt.measures.nDCG @ 10])
    """

    def __init__(self, source: str | os.PathLike):
        self.source = str(source)
        self._texts: dict[str, str] | None = None
        self._irds = None
        self._num_docs: int | None = None
        if self.source.startswith("irds:"):
            import pyterrier as pt
            self.kind = "irds"
            self._irds = pt.get_dataset(self.source)
            self.name = self.source[5:].replace("/", "-")
            return
        path = Path(self.source)
        if not path.exists():
            raise FileNotFoundError(f"no collection at {path}: expected a directory, a BEIR .zip, or an irds: id")
        self.name = path.stem if path.suffix == ".zip" else path.resolve().name
        if path.suffix == ".zip":
            self.kind, self._zip = "beir", zipfile.ZipFile(path)
            corpus = [n for n in self._zip.namelist() if n.endswith("corpus.jsonl")]
            if not corpus:
                raise ValueError(f"{path} has no corpus.jsonl: not a BEIR zip")
            self._root = corpus[0][: -len("corpus.jsonl")]
        else:
            self._zip, self._root = None, ""
            if not (path / "corpus.jsonl").exists():
                raise ValueError(f"{path} has no corpus.jsonl: not a collection directory")
            self.kind = "beir" if (path / "qrels").is_dir() else "local"

    # ---- files ---------------------------------------------------------------------------------------------
    def _open(self, name: str):
        if self._zip is not None:
            return io.TextIOWrapper(self._zip.open(self._root + name), encoding="utf-8")
        return open(Path(self.source) / name, encoding="utf-8")

    def _exists(self, name: str) -> bool:
        if self._zip is not None:
            return (self._root + name) in self._zip.namelist()
        return (Path(self.source) / name).exists()

    def _where(self, name: str) -> str:
        return f"{self.source}/{self._root}{name}"

    def _split_file(self, stem: str, ext: str, split: str | None) -> str:
        name = f"{stem}.{ext}" if split in (None, "test") else f"{stem}.{split}.{ext}"
        if not self._exists(name):
            raise FileNotFoundError(f"{self.source} has no {name} (split {split!r})")
        return name

    def _jsonl(self, name: str, fields: tuple[str, ...]) -> Iterator[tuple]:
        """The ``fields`` of each record of a JSON-lines file; a bad line is an error naming file, line and field."""
        with self._open(name) as f:
            for line_no, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{self._where(name)} line {line_no} is not JSON: {e}") from None
                if not isinstance(record, dict):
                    raise ValueError(f"{self._where(name)} line {line_no} is not a JSON object")
                missing = [k for k in fields if k not in record]
                if missing:
                    raise ValueError(f"{self._where(name)} line {line_no} has no {missing[0]!r} field")
                yield record

    def _qrels_rows(self, name: str, columns: tuple[int, int, int], layout: str, header: bool = False):
        """(qid, docno, label) from the given columns of each line; a malformed line is an error naming it."""
        qids, docnos, labels = [], [], []
        with self._open(name) as f:
            for line_no, line in enumerate(f, 1):
                if not line.strip():
                    continue
                row = line.rstrip("\r\n").split("\t") if header else line.split()
                try:
                    label = int(row[columns[2]]) if len(row) > max(columns) else None
                except ValueError:
                    label = None
                if label is None:
                    if header and line_no == 1:
                        continue   # a BEIR header line
                    raise ValueError(f"{self._where(name)} line {line_no} is not '{layout}': {line.strip()!r}")
                qids.append(row[columns[0]])
                docnos.append(row[columns[1]])
                labels.append(label)
        return pd.DataFrame({"qid": qids, "docno": docnos, "label": labels})

    # ---- public --------------------------------------------------------------------------------------------
    def corpus_iter(self) -> CorpusIter:
        """``{"docno", "text"}`` per document (title joined to text), as a :class:`CorpusIter`: an iterator with a
        ``len()``, whose size reaches the indexing progress bar even through ``enc >> index.indexer()``.

        A document with neither title nor text (Cranfield has two) is left out, and a warning at the end of the pass
        gives their number and docnos: no encoder can represent an empty text (each refuses one, naming it), and no
        query term can match it. ``texts()`` still returns ``""`` for it."""
        return CorpusIter(self._non_empty(), self.num_docs)

    def _non_empty(self) -> Iterator[dict]:
        empty = []
        for doc in self._docs():
            if doc["text"]:
                yield doc
            else:
                empty.append(doc["docno"])
        if empty:
            shown = ", ".join(repr(d) for d in empty[:5]) + (", ..." if len(empty) > 5 else "")
            log.warning("%s: %d document%s with no text left out of corpus_iter(): docno %s", self.name, len(empty),
                        "s" if len(empty) > 1 else "", shown)

    def _docs(self) -> Iterator[dict]:
        if self._irds is not None:
            for doc in self._irds.get_corpus_iter():
                yield {"docno": str(doc["docno"]), "text": _join(doc.get("title"), doc.get("text"))}
            return
        id_key = "_id" if self.kind == "beir" else "docno"
        for doc in self._jsonl("corpus.jsonl", (id_key,)):
            yield {"docno": str(doc[id_key]), "text": _join(doc.get("title"), doc.get("text"))}

    def num_docs(self) -> int:
        """The number of documents (for a file, its non-blank lines, counted once; for irds, ``docs_count()``)."""
        if self._num_docs is None:
            if self._irds is not None:
                count = self._irds.irds_ref().docs_count()
                self._num_docs = count if count is not None else sum(1 for _ in self._irds.get_corpus_iter())
            else:
                with self._open("corpus.jsonl") as f:
                    self._num_docs = sum(1 for line in f if line.strip())
        return self._num_docs

    def topics(self, split: str | None = "test") -> pd.DataFrame:
        """Queries as a frame with ``qid`` and ``query`` (for BEIR, those judged in the split's qrels)."""
        if self._irds is not None:
            return self._irds.get_topics()
        if self.kind == "beir":
            qrels = self.qrels(split)
            rows = list(self._jsonl("queries.jsonl", ("_id", "text")))
            topics = pd.DataFrame({"qid": [str(r["_id"]) for r in rows], "query": [r["text"] for r in rows]})
            return topics[topics["qid"].isin(set(qrels["qid"]))].reset_index(drop=True)
        rows = list(self._jsonl(self._split_file("queries", "jsonl", split), ("qid", "query")))
        return pd.DataFrame({"qid": [str(r["qid"]) for r in rows], "query": [r["query"] for r in rows]})

    def qrels(self, split: str | None = "test") -> pd.DataFrame:
        """Relevance judgements as a frame with ``qid``, ``docno``, ``label``."""
        if self._irds is not None:
            return self._irds.get_qrels()
        if self.kind == "beir":
            name = f"qrels/{split or 'test'}.tsv"
            if not self._exists(name):
                raise FileNotFoundError(f"{self.source} has no {name}")
            return self._qrels_rows(name, (0, 1, 2), "query-id, corpus-id, score (tab-separated)", header=True)
        return self._qrels_rows(self._split_file("qrels", "txt", split), (0, 2, 3), "qid 0 docno label")

    def texts(self, docnos: Sequence[str]) -> list[str]:
        """The text of each docno (title joined), in the order asked; an unknown docno is an error naming it."""
        if self._irds is not None:
            store = self._irds.irds_ref().docs_store()
            texts = {d.doc_id: _join(getattr(d, "title", None), getattr(d, "text", None))
                     for d in store.get_many_iter(list(dict.fromkeys(docnos)))}
        else:
            if self._texts is None:
                self._texts = {d["docno"]: d["text"] for d in self._docs()}
            texts = self._texts
        try:
            return [texts[d] for d in docnos]
        except KeyError as e:
            raise KeyError(f"docno {e.args[0]!r} is not in the collection {self.source}") from None

    def text_loader(self, field: str = "text"):
        """A stage that adds ``text`` to results: ``bm25 >> collection.text_loader() >> reranker``."""
        from .stages.text_loader import TextLoader
        return TextLoader(self.texts, field=field, name=self.name)

    def __repr__(self) -> str:
        return f"Collection({self.source!r})"
