"""Word error rate, for benchmarks and tests: (substitutions + deletions + insertions) / reference words."""

from __future__ import annotations


def word_errors(ref: list[str], hyp: list[str]) -> int:
    """Plain Levenshtein distance over words (unit costs, as WER is defined)."""
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j - 1] + (r != h), prev[j] + 1, cur[j - 1] + 1)
        prev = cur
    return prev[-1]


def wer(ref: list[str], hyp: list[str]) -> float:
    return word_errors(ref, hyp) / max(len(ref), 1)
