"""A short English stopword list: articles, pronouns, auxiliaries, prepositions, conjunctions and the fragments a
BERT-style tokenizer splits off contractions ("don't" -> "don", "'", "t").

``ColBERTModel(..., drop_stopwords=True)`` drops the document vectors of these words (matched on the whole
lower-cased word), which shrinks an index by roughly a third at little cost in effectiveness.

>>> "the" in STOPWORDS, "electron" in STOPWORDS
(True, False)
"""
from __future__ import annotations

__all__ = ["STOPWORDS"]

STOPWORDS: frozenset[str] = frozenset("""
a an the
i me my myself we us our ours ourselves you your yours yourself yourselves
he him his himself she her hers herself it its itself they them their theirs themselves
this that these those who whom whose which what
am is are was were be been being
have has had having do does did doing
will would shall should can could may might must
and but or nor so if then than because as while
of at by for with about against between into through during before after above below
to from up down in out on off over under
again once here there when where why how
all any both each few more most other some such
no not only own same too very just
s t d ll m re ve don doesn didn isn aren wasn weren hasn haven hadn won wouldn shouldn couldn
""".split())
