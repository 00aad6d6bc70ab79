"""Ordering a result frame: by query, best score first (ties keep their input order), with 0-based ``rank``."""
from __future__ import annotations

import pandas as pd

__all__ = ["sort_and_rank"]


def sort_and_rank(results: pd.DataFrame) -> pd.DataFrame:
    """Rows grouped by ``qid`` (in order of first appearance), each query's rows by ``score`` descending."""
    order = pd.factorize(results["qid"])[0]
    out = results.assign(_q=order).sort_values(["_q", "score"], ascending=[True, False], kind="stable")
    out = out.drop(columns="_q").reset_index(drop=True)
    out["rank"] = out.groupby("qid", sort=False).cumcount()
    return out
