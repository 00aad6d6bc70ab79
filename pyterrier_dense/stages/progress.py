"""Progress bars of the package, how to silence them, and how an indexer learns its total through a pipeline.

**Silencing.** A bar shows unless ``verbose=False`` was given to whatever draws it (``BiEncoder``,
``run_experiment``, ``build_systems``), it runs inside :func:`quiet`, or the ``"pyterrier_dense"`` logger does not
pass warnings. That logger also carries every notice (truncation counts and the like), so the standard logging
configuration silences bars and notices alike::

    logging.getLogger("pyterrier_dense").setLevel(logging.ERROR)

**Totals through a pipeline.** PyTerrier's ``Compose.index`` re-chunks the documents of
``(enc >> index.indexer()).index(docs)`` into a generator, so the indexer at the end cannot ask ``len(docs)``. The
hand-over is explicit instead: an indexer opens :func:`expect_total` around its loop, and a source that knows its
size (``Collection.corpus_iter()``) calls :func:`announce_total` when its first document is taken. Generators run in
the context of whoever advances them, so the announcement reaches the indexer that pulls the documents (in the same
thread); anywhere else it is a no-op.

>>> with expect_total() as expected:
...     announce_total(lambda: 3)
>>> expected.total
3
"""
from __future__ import annotations

import contextlib
import logging
from contextvars import ContextVar
from typing import Callable, Iterator

import pyterrier as pt

__all__ = ["log", "quiet", "show_progress", "progress_bar", "expect_total", "announce_total", "ExpectedTotal"]

log = logging.getLogger("pyterrier_dense")

_QUIET: ContextVar[bool] = ContextVar("pyterrier_dense_quiet", default=False)


@contextlib.contextmanager
def quiet(on: bool = True) -> Iterator[None]:
    """No progress bars of this package inside the block (``quiet(False)`` changes nothing): how ``verbose=False``
    reaches stages that have no such argument, such as ``index.indexer()``."""
    token = _QUIET.set(_QUIET.get() or on)
    try:
        yield
    finally:
        _QUIET.reset(token)


def show_progress(verbose: bool = True) -> bool:
    """Whether a bar drawn with ``verbose`` should show now (see the module docstring)."""
    return bool(verbose) and not _QUIET.get() and log.isEnabledFor(logging.WARNING)


def progress_bar(*, desc: str, unit: str, total: int | None = None, verbose: bool = True, **kwargs):
    """A ``pt.tqdm`` bar (text in a terminal, a widget in a notebook), disabled when :func:`show_progress` says so."""
    return pt.tqdm(desc=desc, unit=unit, total=total, disable=not show_progress(verbose), **kwargs)


class ExpectedTotal:
    """What an indexer learns from its source: ``total`` documents (``None`` until a sized source announces it),
    passed on to ``on_total`` as it arrives (the indexer's bar shows it before the first batch is encoded)."""
    __slots__ = ("total", "on_total")

    def __init__(self, on_total: Callable[[int], None] | None = None):
        self.total: int | None = None
        self.on_total = on_total


_EXPECTING: ContextVar[ExpectedTotal | None] = ContextVar("pyterrier_dense_expected_total", default=None)


@contextlib.contextmanager
def expect_total(on_total: Callable[[int], None] | None = None) -> Iterator[ExpectedTotal]:
    """Opened by an indexer around its loop: a sized source iterated inside it fills in ``total`` (and calls
    ``on_total`` with it, in the indexer's thread, while the indexer waits for documents)."""
    expected = ExpectedTotal(on_total)
    token = _EXPECTING.set(expected)
    try:
        yield expected
    finally:
        _EXPECTING.reset(token)


def announce_total(count: Callable[[], int]) -> None:
    """Called by a sized source as its first document is taken: tell the indexer pulling it how many to expect.

    ``count`` is called only when an indexer is waiting for a total, so a source that is merely peeked at
    (``next(collection.corpus_iter())``) never counts its documents. The first announcement wins."""
    expected = _EXPECTING.get()
    if expected is not None and expected.total is None:
        expected.total = int(count())
        if expected.on_total is not None:
            expected.on_total(expected.total)
