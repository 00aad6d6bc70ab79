"""cli: one clear line for bad input; index and search subcommands end to end with a tiny model."""
import subprocess
import sys

import pytest

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
    assert "already exists; pass mode='overwrite'" in capsys.readouterr().err
    assert main(["index", "--collection", str(adi), "--model", tiny_st_model, "--index", str(index), "--append"]) == 2
    assert "duplicate docno '1'" in capsys.readouterr().err   # ADI's documents are already in it
    assert main(["search", "--index", str(index), "--model", tiny_st_model, "--query", "information retrieval",
                 "-k", "3", "--collection", str(adi)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split()[:3] == ["rank", "docno", "score"] and len(lines) == 4
