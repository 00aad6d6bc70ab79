"""Collection: corpus, topics, qrels and docno -> text for a local directory, a BEIR directory/zip, or ``irds:``."""
from __future__ import annotations

import csv
import io
import json
import os
import zipfile
from pathlib import Path
from typing import Iterator, Sequence

import pandas as pd

__all__ = ["Collection"]


def _join(title, text) -> str:
    title, text = (title or "").strip(), (text or "").strip()
    return f"{title} {text}".strip() if title else text


class Collection:
    """A test collection, whatever its layout.

    - a directory in the ``shared/data`` layout: ``corpus.jsonl`` (docno/title/text), ``queries[.split].jsonl``
      (qid/query), ``qrels[.split].txt`` (TREC);
    - a BEIR directory or zip: ``corpus.jsonl`` (_id/title/text), ``queries.jsonl``, ``qrels/<split>.tsv``;
    - ``irds:<id>`` through ``pt.get_dataset`` (needs internet the first time).

    Titles are joined to texts (``"title text"``) for indexing and text lookup.

    Example::

        c = ptd.Collection("../shared/data/scifact")
        (enc >> index.indexer()).index(c.corpus_iter())
        pt.Experiment([dense], c.topics(), c.qrels(), [pt.measures.nDCG @ 10])
    """

    def __init__(self, source: str | os.PathLike):
        self.source = str(source)
        self._texts: dict[str, str] | None = None
        self._irds = None
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

    def _split_file(self, stem: str, ext: str, split: str | None) -> str:
        name = f"{stem}.{ext}" if split in (None, "test") else f"{stem}.{split}.{ext}"
        if not self._exists(name):
            raise FileNotFoundError(f"{self.source} has no {name} (split {split!r})")
        return name

    # ---- public --------------------------------------------------------------------------------------------
    def corpus_iter(self) -> Iterator[dict]:
        """Yield ``{"docno", "text"}`` per document (title joined to text)."""
        if self._irds is not None:
            yield from self._irds.get_corpus_iter()
            return
        id_key = "_id" if self.kind == "beir" else "docno"
        with self._open("corpus.jsonl") as f:
            for line_no, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    doc = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{self.source}/corpus.jsonl line {line_no} is not JSON: {e}") from None
                yield {"docno": str(doc[id_key]), "text": _join(doc.get("title"), doc.get("text"))}

    def topics(self, split: str | None = "test") -> pd.DataFrame:
        """Queries as a frame with ``qid`` and ``query`` (for BEIR, those judged in the split's qrels)."""
        if self._irds is not None:
            return self._irds.get_topics()
        if self.kind == "beir":
            qrels = self.qrels(split)
            with self._open("queries.jsonl") as f:
                rows = [json.loads(line) for line in f if line.strip()]
            topics = pd.DataFrame({"qid": [str(r["_id"]) for r in rows], "query": [r["text"] for r in rows]})
            return topics[topics["qid"].isin(set(qrels["qid"]))].reset_index(drop=True)
        with self._open(self._split_file("queries", "jsonl", split)) as f:
            rows = [json.loads(line) for line in f if line.strip()]
        return pd.DataFrame({"qid": [str(r["qid"]) for r in rows], "query": [r["query"] for r in rows]})

    def qrels(self, split: str | None = "test") -> pd.DataFrame:
        """Relevance judgements as a frame with ``qid``, ``docno``, ``label``."""
        if self._irds is not None:
            return self._irds.get_qrels()
        if self.kind == "beir":
            name = f"qrels/{split or 'test'}.tsv"
            if not self._exists(name):
                raise FileNotFoundError(f"{self.source} has no {name}")
            with self._open(name) as f:
                rows = list(csv.reader(f, delimiter="\t"))
            if rows and not rows[0][-1].lstrip("-").isdigit():
                rows = rows[1:]  # header
            return pd.DataFrame({"qid": [r[0] for r in rows], "docno": [r[1] for r in rows],
                                 "label": [int(r[2]) for r in rows]})
        with self._open(self._split_file("qrels", "txt", split)) as f:
            rows = [line.split() for line in f if line.strip()]
        return pd.DataFrame({"qid": [r[0] for r in rows], "docno": [r[2] for r in rows],
                             "label": [int(r[3]) for r in rows]})

    def texts(self, docnos: Sequence[str]) -> list[str]:
        """The text of each docno (title joined); an unknown docno is an error naming it."""
        if self._texts is None:
            if self._irds is not None:
                store = self._irds.irds_ref().docs_store()
                return [_join(getattr(d, "title", None), d.text) for d in store.get_many_iter(docnos)]
            self._texts = {d["docno"]: d["text"] for d in self.corpus_iter()}
        try:
            return [self._texts[d] for d in docnos]
        except KeyError as e:
            raise KeyError(f"docno {e.args[0]!r} is not in the collection {self.source}") from None

    def text_loader(self, field: str = "text"):
        """A stage that adds ``text`` to results: ``bm25 >> collection.text_loader() >> reranker``."""
        from .stages.text_loader import TextLoader
        return TextLoader(self.texts, field=field, name=self.name)

    def __repr__(self) -> str:
        return f"Collection({self.source!r})"
