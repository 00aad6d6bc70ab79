"""The tutorial notebook runs top to bottom (on the tiny ADI collection) and shows what it promises."""
from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "01_dense_retrieval.ipynb"
ADI = Path(__file__).resolve().parents[2] / "shared" / "data" / "adi"
SYSTEMS = ["BM25", "Dense", "Re-rank", "Hybrid"]


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

    # the indexes went to PTD_INDEX_DIR, named after the collection, not into the repository
    assert (tmp_path / "adi.pisa").is_dir() and (tmp_path / "adi.minilm.dense").is_dir()
