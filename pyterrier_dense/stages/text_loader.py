"""TextLoader: adds the ``text`` of each result's ``docno`` from a lookup (e.g. a :class:`Collection`)."""
from __future__ import annotations

from typing import Callable, Sequence

import pandas as pd
import pyterrier as pt

from .columns import require_columns

__all__ = ["TextLoader"]


class TextLoader(pt.Transformer):
    """``bm25 >> collection.text_loader() >> reranker``; a docno the lookup does not know is an error naming it."""

    def __init__(self, lookup: Callable[[Sequence[str]], list], *, field: str = "text", name: str = "texts"):
        self.lookup, self.field, self.name = lookup, field, name

    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        require_columns(inp, ["docno"], "TextLoader")
        return inp.assign(**{self.field: self.lookup(inp["docno"].tolist()) if len(inp) else pd.Series(dtype=object)})

    def __repr__(self) -> str:
        return f"TextLoader({self.name})"
