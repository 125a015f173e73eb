"""The words a turn shares with each route's description: a second, lexical reading.

The encoders read a request and a route description apart and compare the two vectors, so
"explain how this Go code works" lands near whichever code route its vector sits closest
to, whatever the verb. When the description names the action ("explaining ... existing
code") and the request uses it, that shared word is evidence no adapter has to learn, and
it holds for routes nobody trained on. ``RouteWords.scores`` gives, for each text (read as
its ``stems``, once per decision) and route, the summed weight of the route's description
words that the text contains, each
word weighted by how few of the config's routes use it (a word every route shares tells
none apart), less the mean over the routes (so it moves routes against each other, never
all of them against "other").

Words are compared by their English Snowball stems ("writing" and "write" alike), from
the ``snowballstemmer`` package rather than hand-written suffix rules. Pure functions: no
I/O.
"""

from __future__ import annotations

import math
import re
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import numpy.typing as npt
import snowballstemmer

Array = npt.NDArray[Any]

# Words that say nothing about which task a request is: function words, and the words any
# description or request uses to talk about asking ("help the user with requests to ...").
# Chosen by hand (words under three letters are never read); without them the development
# set lost 5 of its 279 conversations. "new" and "existing" do tell writing code from
# explaining it, but read as evidence they changed nothing (one development conversation
# lost; bench/RESULTS.md, "The adapters re-fitted from the tree").
_FILLER_WORDS = """the and for with from this that these those its into your you user users their
them they our can how what which who when where why other such like any some more most than
then not does did done about over under between including include includes etc via per out
own one two each all new existing way ways ask asks asking request requests help want wants
need needs make makes making get give gives text texts"""
FILLER = frozenset(_FILLER_WORDS.split())
# Only so much of a turn is read for its words: a pasted document's own vocabulary says
# what it is about, not what to do with it, and reading it whole would cost as much as it.
# Earlier turns too, though the encoders read them to 32 tokens only: cutting their words
# to the same (about 160 characters) lost a development conversation and gained nothing.
READ_CHARS = 2000
_WORD = re.compile(r"[a-z]+")
# A Snowball stemmer keeps the word it is working on in its own fields, so two threads
# sharing one get each other's stems, or an IndexError (the router decides in several
# threads at once): a stemmer per thread.
_STEMMERS = threading.local()


# Stems of words seen before: a decision of known words costs about a tenth of one of new
# words. Bounded: 16,384 words take about 2.3 MB (measured with tracemalloc).
@lru_cache(maxsize=16384)
def _stem(word: str) -> str:
    stemmer = getattr(_STEMMERS, "english", None)
    if stemmer is None:
        stemmer = _STEMMERS.english = snowballstemmer.stemmer("english")
    result: str = stemmer.stemWord(word)
    return result


def stems(text: str) -> frozenset[str]:
    """The stems of ``text``'s words of three letters or more, filler left out."""
    words = _WORD.findall(text[:READ_CHARS].lower())
    return frozenset(_stem(w) for w in words if len(w) > 2 and w not in FILLER)


@dataclass(frozen=True)
class RouteWords:
    """Each route's description stems with their weights: log((routes + 1) / routes using
    the stem)."""

    weights: tuple[dict[str, float], ...]

    @classmethod
    def of(cls, descriptions: Sequence[str]) -> RouteWords:
        sets = [stems(d) for d in descriptions]
        used_by = Counter(s for words in sets for s in words)
        n = len(sets)
        return cls(tuple({s: math.log((n + 1) / used_by[s]) for s in words} for words in sets))

    def scores(self, texts: Sequence[frozenset[str]]) -> Array:
        """[len(texts), routes]: the weight of each route's stems in each text (given as its
        ``stems``), less the mean over the routes."""
        result = np.zeros((len(texts), len(self.weights)), dtype=np.float32)
        for row, found in enumerate(texts):
            for col, weights in enumerate(self.weights):
                result[row, col] = sum(w for s, w in weights.items() if s in found)
        if not self.weights:
            return result
        centred: Array = result - result.mean(axis=1, keepdims=True)
        return centred

    def shared(self, found: frozenset[str]) -> dict[int, list[str]]:
        """For ``route --explain``: the stems each route shares with a text's ``stems``
        (by route index)."""
        matches = {col: sorted(s for s in w if s in found) for col, w in enumerate(self.weights)}
        return {col: words for col, words in matches.items() if words}
