"""cli: one clear line for bad input; index and search subcommands end to end with a tiny model."""
import json
import re
import subprocess
import sys
import time

import pandas as pd
import pyterrier as pt
import pytest

import pyterrier_dense.experiment

from pyterrier_dense.cli import main
from conftest import shared_collection


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "pyterrier_dense.cli", *args], capture_output=True, text=True)


@pytest.mark.parametrize("args,message", [
    (["experiment", "--collection", "/no/such/dir"], "no collection at /no/such/dir: expected a directory, a BEIR .zip, or an irds: id"),
    (["search", "--index", "/no/such/index", "--query", "x"], "no index at /no/such/index"),
])
def test_bad_paths_give_one_line(args, message):
    done = run_cli(*args)
    assert done.returncode == 2
    assert done.stderr.strip() == f"pyterrier-dense: error: {message}"


def test_index_then_search(tiny_st_model, tmp_path, capsys):
    adi = shared_collection("adi")
    index = tmp_path / "adi.dense"
    assert main(["index", "--collection", str(adi), "--model", tiny_st_model, "--index", str(index)]) == 0
    assert "indexed 82 documents (32 dimensions)" in capsys.readouterr().out
    assert main(["index", "--collection", str(adi), "--model", tiny_st_model, "--index", str(index)]) == 2
    err = capsys.readouterr().err
    assert f"{index} already exists: pass --overwrite to replace it" in err and "--append" in err and "mode=" not in err
    assert main(["index", "--collection", str(adi), "--model", tiny_st_model, "--index", str(index), "--append"]) == 2
    assert re.search(r"duplicate docno '\d+'", capsys.readouterr().err)   # ADI's documents are already in it
    assert main(["search", "--index", str(index), "--model", tiny_st_model, "--query", "information retrieval",
                 "-k", "3", "--collection", str(adi)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split()[:3] == ["rank", "docno", "score"] and len(lines) == 4


def write_tiny_beir(root, corpus=({"_id": "d1", "title": "Gene", "text": "gene study"},
                                  {"_id": "d2", "title": "", "text": "light wave energy"})):
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in corpus))
    (root / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "gene"}) + "\n"
                                        + json.dumps({"_id": "q2", "text": "light"}) + "\n")
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t1\n")
    return root


def test_search_mismatch_names_a_flag_that_exists(tiny_st_model, other_tiny_model, tmp_path, capsys):
    beir, index = write_tiny_beir(tmp_path / "tiny"), str(tmp_path / "tiny.dense")
    assert main(["index", "--collection", str(beir), "--model", tiny_st_model, "--index", index]) == 0
    capsys.readouterr()
    search = ["search", "--index", index, "--model", other_tiny_model, "--query", "gene", "-k", "2"]
    assert main(search) == 2
    err = capsys.readouterr().err
    assert "another encoder configuration" in err and "--no-check-encoder" in err and "check_encoder=False" not in err
    assert main(search + ["--no-check-encoder"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 3


def test_corpus_line_without_id_is_named(tiny_st_model, tmp_path, capsys):
    beir = write_tiny_beir(tmp_path / "tiny", corpus=({"_id": "d1", "text": "gene"}, {"id": "d2", "text": "light"}))
    assert main(["index", "--collection", str(beir), "--model", tiny_st_model, "--index", str(tmp_path / "x")]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == \
        f"pyterrier-dense: error: {beir}/corpus.jsonl line 2 has no '_id' field"


@pytest.fixture
def no_builds(monkeypatch):
    def build_systems(*args, **kwargs):
        raise AssertionError("build_systems must not run before the split and --out are checked")
    monkeypatch.setattr(pyterrier_dense.experiment, "build_systems", build_systems)


def test_experiment_checks_the_split_before_building(tmp_path, capsys, no_builds):
    beir = write_tiny_beir(tmp_path / "tiny")
    start = time.perf_counter()
    assert main(["experiment", "--collection", str(beir), "--split", "dev", "--index-dir", str(tmp_path / "ix")]) == 2
    assert f"{beir} has no qrels/dev.tsv" in capsys.readouterr().err
    assert time.perf_counter() - start < 5 and not (tmp_path / "ix").exists()


def test_experiment_checks_out_before_building(tmp_path, capsys, no_builds):
    beir = write_tiny_beir(tmp_path / "tiny")
    (tmp_path / "a_file").write_text("")
    out = tmp_path / "a_file" / "results.json"     # its directory is a file: not writable
    assert main(["experiment", "--collection", str(beir), "--out", str(out)]) == 2
    assert f"cannot write --out {out}" in capsys.readouterr().err


def test_experiment_writes_results_json(tmp_path, capsys, monkeypatch):
    beir = write_tiny_beir(tmp_path / "tiny")
    runs = {name: pt.Transformer.from_df(pd.DataFrame({"qid": ["q1", "q1", "q2", "q2"], "docno": docnos,
                                                       "score": [2.0, 1.0, 2.0, 1.0]}))
            for name, docnos in [("bm25", ["d1", "d2", "d1", "d2"]), ("dense", ["d2", "d1", "d2", "d1"])]}
    monkeypatch.setattr(pyterrier_dense.experiment, "build_systems", lambda *a, **k: runs)
    out = tmp_path / "new_dir" / "results.json"
    assert main(["experiment", "--collection", str(beir), "--out", str(out)]) == 0
    summary = json.loads(out.read_text())
    assert summary["systems"]["bm25"]["R@100"] == 1.0 and summary["systems"]["dense"]["R@100"] == 1.0
    assert summary["systems"]["bm25"]["AP"] == summary["systems"]["dense"]["AP"] == 0.75
    assert f"wrote {out}" in capsys.readouterr().out


# ---- the main job as a newcomer meets it --------------------------------------------------------------------------
import logging
import os

import pyterrier_dense as ptd
from pyterrier_dense.experiment import build_bm25, run_experiment


def fake_runs(qids=("q1", "q2", "q3", "q4")):
    """bm25; "same", identical to it (no p-value); "dense", better than bm25 on two queries, worse on one."""
    def run(first_for):
        rows = [(q, d, 2.0 if d == first_for(q) else 1.0) for q in qids for d in ("d1", "d2")]
        return pt.Transformer.from_df(pd.DataFrame(rows, columns=["qid", "docno", "score"]))
    relevant = {q: "d1" if i % 2 == 0 else "d2" for i, q in enumerate(qids)}
    return {"bm25": run(lambda q: "d2"), "same": run(lambda q: "d2"),
            "dense": run(lambda q: relevant[q] if q != qids[-1] else ("d1" if relevant[q] == "d2" else "d2"))}


def write_beir4(root):
    beir = write_tiny_beir(root)
    qids = ["q1", "q2", "q3", "q4"]
    (beir / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": q}) + "\n" for q in qids))
    (beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
        f"{q}\t{'d1' if i % 2 == 0 else 'd2'}\t1\n" for i, q in enumerate(qids)))
    return beir


def test_experiment_prints_a_compact_table_and_writes_significance(tmp_path, capsys, monkeypatch):
    beir = write_beir4(tmp_path / "tiny")
    monkeypatch.setattr(pyterrier_dense.experiment, "build_systems", lambda *a, **k: fake_runs())
    out = tmp_path / "results.json"
    assert main(["experiment", "--collection", str(beir), "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["system", "nDCG@10", "R@100", "AP", "p", "nDCG@10", "p", "R@100", "p", "AP"]
    rows = {line.split()[0]: line.split()[1:] for line in lines[1:4]}
    assert rows["bm25"][3:] == ["–"] * 3 and rows["same"][3:] == ["–"] * 3    # no test: the same values as bm25
    assert not any(v.endswith("*") for v in rows["same"])
    assert lines[4].startswith("* differs from bm25: paired t-test, Holm-corrected p < 0.05")
    summary = json.loads(out.read_text())
    assert summary["measures"] == ["nDCG@10", "R@100", "AP"] and summary["baseline"] == "bm25"
    same, dense = summary["significance"]["same"]["nDCG@10"], summary["significance"]["dense"]["nDCG@10"]
    assert same == {"improved": 0, "degraded": 0, "p_value": None, "p_value_corrected": None, "reject": False}
    assert (dense["improved"], dense["degraded"]) == (2, 1) and 0 < dense["p_value"] <= dense["p_value_corrected"] <= 1
    assert dense["reject"] is False and rows["dense"][3] == f"{dense['p_value_corrected']:.3f}"
    assert set(summary["per_query"]["dense"]["AP"]) == {"q1", "q2", "q3", "q4"}
    assert "NaN" not in out.read_text()


def test_experiment_plot_draws_per_query_differences(tmp_path, capsys, monkeypatch):
    pytest.importorskip("matplotlib")
    beir = write_beir4(tmp_path / "tiny")
    monkeypatch.setattr(pyterrier_dense.experiment, "build_systems", lambda *a, **k: fake_runs())
    png = tmp_path / "plots" / "per_query.png"
    assert main(["experiment", "--collection", str(beir), "--plot", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"wrote {png}" in capsys.readouterr().out


def test_experiment_plot_without_matplotlib_fails_first(tmp_path, capsys, monkeypatch, no_builds):
    monkeypatch.setitem(sys.modules, "matplotlib", None)      # as if it were not installed
    beir = write_tiny_beir(tmp_path / "tiny")
    assert main(["experiment", "--collection", str(beir), "--plot", str(tmp_path / "p.png")]) == 2
    assert "--plot needs matplotlib: pip install 'pyterrier-dense[demo]'" in capsys.readouterr().err


def test_pisa_builds_quietly_with_one_bar_of_ours(tmp_path, capfd):
    pytest.importorskip("pyterrier_pisa", reason="BM25 comes from pyterrier-pisa")
    adi = ptd.Collection(shared_collection("adi"))
    bm25 = build_bm25(adi, tmp_path)
    err = capfd.readouterr().err
    assert "[info]" not in err and "Create index" not in err and "Storing" not in err
    assert "BM25 index (PISA)" in err and "82/82" in err
    assert len(bm25(adi.topics().head(2))) > 0
    build_bm25(adi, tmp_path)                           # reused: no bar, no log
    assert capfd.readouterr().err == ""


def test_pisa_log_is_shown_when_the_build_fails(tmp_path, capfd, monkeypatch):
    pyterrier_pisa = pytest.importorskip("pyterrier_pisa", reason="BM25 comes from pyterrier-pisa")
    def failing_index(self, docs):
        os.write(2, b"[error] native trouble\n")
        raise RuntimeError("the build failed")
    monkeypatch.setattr(pyterrier_pisa.PisaIndex, "index", failing_index)
    with pytest.raises(RuntimeError, match="the build failed"):
        build_bm25(ptd.Collection(shared_collection("adi")), tmp_path)
    err = capfd.readouterr().err
    assert "building the PISA index failed; its log:" in err and "[error] native trouble" in err


@pytest.fixture
def encode_calls(monkeypatch):
    """The (role, number of texts) of every BiEncoderModel.encode call."""
    from pyterrier_dense.models.bi_encoder_model import BiEncoderModel
    calls, original = [], BiEncoderModel.encode
    def spy(self, texts, role="doc", **kw):
        calls.append((role, len(texts)))
        return original(self, texts, role, **kw)
    monkeypatch.setattr(BiEncoderModel, "encode", spy)
    return calls


def test_main_job_encodes_the_topics_once_and_says_so_once(tiny_st_model, tmp_path, caplog, encode_calls):
    pytest.importorskip("pyterrier_pisa", reason="BM25 comes from pyterrier-pisa")
    adi = ptd.Collection(shared_collection("adi"))
    with caplog.at_level(logging.WARNING, logger="pyterrier_dense"):
        run_experiment(adi, tiny_st_model, "test", tmp_path)
    assert [n for role, n in encode_calls if role == "query"] == [adi.topics()["query"].nunique()]
    notices = [r.getMessage() for r in caplog.records if "truncated" in r.getMessage()]
    assert sum("queries were longer" in m for m in notices) == 1 and "raise max_length=" in notices[-1]
    assert sum("documents were longer" in m for m in notices) == 1 and "pt.text.sliding" in notices[0]


def test_main_job_progress_and_notices_can_be_silenced(tiny_st_model, tmp_path, capfd, caplog):
    pytest.importorskip("pyterrier_pisa", reason="BM25 comes from pyterrier-pisa")
    adi = ptd.Collection(shared_collection("adi"))
    truncation = lambda: [r for r in caplog.records if "truncated" in r.getMessage()]
    run_experiment(adi, tiny_st_model, "test", tmp_path / "loud")
    err = capfd.readouterr().err
    assert "BM25 index (PISA)" in err and "indexing: 100%" in err and "82/82" in err and len(truncation()) == 2
    caplog.clear()
    run_experiment(adi, tiny_st_model, "test", tmp_path / "quiet", verbose=False)
    err = capfd.readouterr().err
    assert err == "" and len(truncation()) == 2          # no bars; notices are logging's to configure
    caplog.clear()
    logger, level = logging.getLogger("pyterrier_dense"), logging.getLogger("pyterrier_dense").level
    logger.setLevel(logging.ERROR)          # the standard logging configuration: bars and notices alike
    try:
        run_experiment(adi, tiny_st_model, "test", tmp_path / "silent")
    finally:
        logger.setLevel(level)
    assert capfd.readouterr().err == "" and truncation() == []


def test_cli_quiet_prints_only_the_results(tiny_st_model, tmp_path, capfd):
    adi = shared_collection("adi")
    assert main(["index", "--collection", str(adi), "--model", tiny_st_model, "--index", str(tmp_path / "a.dense")]) == 0
    captured = capfd.readouterr()
    assert "indexing: 100%" in captured.err and "82/82" in captured.err   # n/total and time left
    assert main(["index", "-q", "--collection", str(adi), "--model", tiny_st_model,
                 "--index", str(tmp_path / "b.dense")]) == 0
    captured = capfd.readouterr()
    assert captured.err == "" and "indexed 82 documents" in captured.out
    assert logging.getLogger("pyterrier_dense").level == logging.NOTSET   # --quiet leaves the logger as it was


def test_train_fits_saves_and_names_the_next_command(tiny_st_model, tmp_path, capsys):
    beir = write_beir4(tmp_path / "beir")
    out = tmp_path / "trained"
    assert main(["train", "--collection", str(beir), "--model", tiny_st_model, "--split", "test", "--epochs", "2",
                 "--batch-size", "2", "--skip-top", "0", "--index-dir", str(tmp_path / "idx"), "--out", str(out),
                 "-q"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("epoch 1 train_loss ") and lines[1].startswith("epoch 2 train_loss ")
    assert f"trained on 4 queries; saved {out}" in lines[2]
    assert lines[3] == f"evaluate it: pyterrier-dense experiment --collection {beir} --model {out}"
    trained = ptd.BiEncoder(str(out), verbose=False)
    assert trained.model.fingerprint != ptd.BiEncoder(tiny_st_model, verbose=False).model.fingerprint
    assert not (out / ".trainer").exists()


def test_train_interpolate_zero_saves_the_starting_weights(tiny_st_model, tmp_path, capsys):
    beir = write_beir4(tmp_path / "beir")
    out = tmp_path / "wise"
    assert main(["train", "--collection", str(beir), "--model", tiny_st_model, "--split", "test", "--batch-size", "2",
                 "--skip-top", "0", "--index-dir", str(tmp_path / "idx"), "--interpolate", "0", "--out", str(out),
                 "-q"]) == 0
    assert "saved weights: 0 trained + 1 starting (WiSE-FT)" in capsys.readouterr().out
    start = ptd.BiEncoder(tiny_st_model, verbose=False).model
    assert ptd.BiEncoder(str(out), verbose=False).model.fingerprint == start.fingerprint   # trained, then undone


def test_train_reads_a_triples_file_and_trains_a_cross_encoder(tiny_st_model, tmp_path, capsys):
    beir = write_beir4(tmp_path / "beir")
    triples = tmp_path / "triples.jsonl"
    triples.write_text(json.dumps({"qid": "q1", "query": "gene", "pos": ["d1"], "neg": ["d2"]}) + "\n"
                       + json.dumps({"qid": "q2", "query": "light", "pos": ["d2"], "neg": ["d1", "d9"]}) + "\n")
    out = tmp_path / "ce"
    assert main(["train", "--collection", str(beir), "--model", tiny_st_model, "--family", "cross-encoder",
                 "--triples", str(triples), "--out", str(out), "-q"]) == 0
    printed = capsys.readouterr().out
    assert "trained on 2 queries (skipped: {'negatives without text': 1}); saved" in printed   # d9
    assert "evaluate it" not in printed
    assert ptd.CrossEncoder(str(out), verbose=False).model.num_labels == 1
