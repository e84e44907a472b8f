"""Word times for the model's words, from a recogniser's timed words.

The model's words (typed by the user, or the recogniser's own text) are tokenised by the same rule as in
training (``words_of``); the recogniser's timed words are tokenised the same way and the two sequences
are aligned by edit distance. A word that matches (or replaces) a recognised word takes its times; a
typed word the recogniser did not hear gets times interpolated between its neighbours and is marked so,
because an attention picture must not present a guess as a measurement.
"""

from __future__ import annotations

from dataclasses import dataclass
from difflib import SequenceMatcher

from mmfer.corpora.text import clean_text, words_of
from mmfer.speech.asr import Word


@dataclass
class TimedWord:
    word: str
    start: float
    end: float
    timing: str  # "recognised" (same word), "substituted" (aligned to another word), "interpolated"


def timed_tokens(words: list[Word]) -> list[tuple[str, float, float]]:
    """The recogniser's words as model tokens ("door." → "door"; "what?!" → "what", "?!"), each with the
    times of the word it came from."""
    return [(t, w.start, w.end) for w in words for t in words_of(clean_text(w.word))]


def _sub(x: str, y: str) -> float:
    """Substitution cost: 0 for the same word, 0.5-1 by spelling distance (so "cannot" pairs with "can't"
    rather than with a neighbour), always below a deletion plus an insertion (2)."""
    return 0.0 if x == y else 1.0 - 0.5 * SequenceMatcher(None, x, y).ratio()


def _edit_path(a: list[str], b: list[str]) -> list[tuple[int | None, int | None]]:
    """Edit-distance alignment: pairs (i, j), (i, None) for a word only in ``a``, (None, j) only in ``b``."""
    n, m = len(a), len(b)
    cost = [[0.0] * (m + 1) for _ in range(n + 1)]
    for i in range(n + 1):
        cost[i][0] = float(i)
    for j in range(m + 1):
        cost[0][j] = float(j)
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            cost[i][j] = min(cost[i - 1][j - 1] + _sub(a[i - 1], b[j - 1]), cost[i - 1][j] + 1, cost[i][j - 1] + 1)
    path, i, j = [], n, m
    while i or j:
        if i and j and cost[i][j] == cost[i - 1][j - 1] + _sub(a[i - 1], b[j - 1]):
            path.append((i - 1, j - 1))
            i, j = i - 1, j - 1
        elif i and cost[i][j] == cost[i - 1][j] + 1:
            path.append((i - 1, None))
            i -= 1
        else:
            path.append((None, j - 1))
            j -= 1
    return path[::-1]


def align(tokens: list[str], recognised: list[Word], duration: float) -> list[TimedWord]:
    """Times for ``tokens`` (the model's words) from the recogniser's timed ``recognised`` words."""
    timed = timed_tokens(recognised)
    times: list[tuple[float, float, str] | None] = [None] * len(tokens)
    for i, j in _edit_path(tokens, [t for t, _, _ in timed]):
        if i is not None and j is not None:
            t, s, e = timed[j]
            times[i] = (s, e, "recognised" if t == tokens[i] else "substituted")
    out: list[TimedWord] = []
    i = 0
    while i < len(tokens):
        if times[i] is not None:
            s, e, how = times[i]
            out.append(TimedWord(tokens[i], round(s, 3), round(e, 3), how))
            i += 1
            continue
        k = i  # an untimed run [i, k): shares the gap between its timed neighbours equally
        while k < len(tokens) and times[k] is None:
            k += 1
        lo = out[-1].end if out else 0.0
        hi = max(times[k][0] if k < len(tokens) else duration, lo)
        step = (hi - lo) / (k - i)
        for n in range(i, k):
            a = lo + (n - i) * step
            out.append(TimedWord(tokens[n], round(a, 3), round(a + step, 3), "interpolated"))
        i = k
    return out
