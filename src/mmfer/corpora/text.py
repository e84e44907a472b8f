"""Transcript clean-up shared by every reader: noise tokens, words, and what 'noise only' means."""

from __future__ import annotations

import re

import regex

# [LAUGHTER] in transcriptions, ++LAUGHTER++ in forced alignment.
NOISE_TOKEN = re.compile(r"\[([A-Za-z_]+)\]|\+\+([A-Za-z_]+)\+\+")
KEPT_NOISE = {"LAUGHTER"}  # laughter says something about emotion; breathing/garbage do not
LAUGHTER_WORD = "[laughter]"
WORD = re.compile(r"\[laughter\]|[a-z0-9]+(?:'[a-z]+)*")  # ASCII words (the sample corpus's own aligner)
# Unicode words: letters of any script with their combining marks and digits, apostrophes inside words,
# and runs of ! and ? (they carry emotion in written dialogue: "What?!"). The encoder's own tokenizer
# splits these further into sub-words.
TOKEN = regex.compile(r"\[laughter\]|[\p{L}\p{N}][\p{L}\p{M}\p{N}]*(?:'[\p{L}\p{M}\p{N}]+)*|[!?]+")
APOSTROPHES = str.maketrans({"\u2019": "'", "\u02bc": "'", "\u2018": "'"})
ALIGN_MARKERS = {"<s>", "</s>", "<sil>", "<sil/>", "<noise>"}
VARIANT = re.compile(r"\(\d+\)$")


def _noise_name(match: re.Match) -> str:
    return (match.group(1) or match.group(2)).upper()


def clean_text(raw: str) -> str:
    """Remove non-speech noise tokens but keep laughter (as ``[LAUGHTER]``); normalise spaces."""

    def repl(m: re.Match) -> str:
        name = _noise_name(m)
        return f" [{name}] " if name in KEPT_NOISE else " "

    return " ".join(NOISE_TOKEN.sub(repl, raw).split())


def is_noise_only(raw: str) -> bool:
    """True when nothing but breathing/garbage-like tokens is left (empty transcripts included)."""
    return clean_text(raw) == ""


def words_of(text: str) -> list[str]:
    """Tokenise a cleaned transcript: lower-case Unicode words (apostrophes kept inside them) and ! / ?."""
    return TOKEN.findall(text.lower().translate(APOSTROPHES))


def align_word(token: str) -> str | None:
    """Map a forced-alignment token to a word: drop markers and non-laughter noise, strip ``(2)``."""
    if token in ALIGN_MARKERS or (token.startswith("<") and token.endswith(">")):
        return None
    m = NOISE_TOKEN.fullmatch(token)
    if m:
        return LAUGHTER_WORD if _noise_name(m) in KEPT_NOISE else None
    return VARIANT.sub("", token).lower()
