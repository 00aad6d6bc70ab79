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
