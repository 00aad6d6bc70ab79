"""The tutorial notebook runs top to bottom (on the tiny ADI collection) and shows what it promises."""
from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "01_dense_retrieval.ipynb"
ADI = Path(__file__).resolve().parents[2] / "shared" / "data" / "adi"
SYSTEMS = ["BM25", "Dense", "Re-rank", "Hybrid"]
COUNT_ENCODES = """
from pyterrier_dense.models.bi_encoder_model import BiEncoderModel
_calls, _encode = [], BiEncoderModel.encode
def _counted(self, texts, role="doc", **kw):
    _calls.append(role)
    return _encode(self, texts, role, **kw)
BiEncoderModel.encode = _counted
"""


def _tagged(nb, tag: str):
    cells = [c for c in nb.cells if tag in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, f"expected one cell tagged {tag!r} in {NOTEBOOK.name}, found {len(cells)}"
    return cells[0]


def _text_of(cell) -> str:
    parts = []
    for out in cell.get("outputs", []):
        if out.get("output_type") == "stream":
            parts.append(out.get("text", ""))
        parts.append(out.get("data", {}).get("text/plain", ""))
    return "\n".join(parts)


@pytest.mark.slow
def test_notebook_runs_on_adi(tmp_path, monkeypatch):
    if not ADI.is_dir():
        pytest.skip(f"the ADI collection is not at {ADI}: the notebook test needs shared/data/adi next to the repo")
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")

    monkeypatch.setenv("PTD_COLLECTION", str(ADI))
    monkeypatch.setenv("PTD_INDEX_DIR", str(tmp_path))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    # count the query encodings of the whole notebook: a cell before all others, one after
    nb.cells.insert(0, nbformat.v4.new_code_cell(COUNT_ENCODES))
    nb.cells.append(nbformat.v4.new_code_cell('print("query encodes:", _calls.count("query"))'))
    client = nbclient.NotebookClient(nb, timeout=900, kernel_name="python3", coalesce_streams=True,
                                     resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    client.execute()   # raises CellExecutionError, naming the cell, if any cell fails

    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.get("output_type") == "error"]
    assert not errors, f"cells raised: {[(e['ename'], e['evalue']) for e in errors]}"

    experiment = _text_of(_tagged(nb, "experiment"))
    for name in SYSTEMS:
        assert name in experiment, f"system {name!r} missing from the experiment output:\n{experiment}"
    for measure in ("nDCG@10", "R@100", "AP"):
        assert measure in experiment, f"measure {measure!r} missing from the experiment output:\n{experiment}"

    plot = _tagged(nb, "per-query-plot")
    assert any("image/png" in o.get("data", {}) for o in plot.outputs), "the per-query plot produced no image"

    # one query (the example) encoded before the experiment, the rest once: the systems share the encoder's cache
    assert "query encodes: 2" in _text_of(nb.cells[-1])
    # progress with totals; PISA's native log kept out
    assert "82/82" in _text_of(_tagged(nb, "dense-indexing")) and "82/82" in _text_of(_tagged(nb, "bm25-indexing"))
    everything = "\n".join(_text_of(c) for c in nb.cells if c.cell_type == "code")
    assert "[info]" not in everything and "Create index" not in everything and "Storing" not in everything

    # the indexes went to PTD_INDEX_DIR, named after the collection, not into the repository
    assert (tmp_path / "adi.pisa").is_dir() and (tmp_path / "adi.minilm.dense").is_dir()
