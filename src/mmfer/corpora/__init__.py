"""Corpus readers: a corpus on disk in, one validated utterance table (:class:`Corpus`) out.

Readers register themselves in ``READERS`` (see ``corpora.base``); importing this package loads the
built-in ones (IEMOCAP release folders, CSV manifests).
"""

from __future__ import annotations

from pathlib import Path

import mmfer.corpora.iemocap  # noqa: F401  (registers the reader)
import mmfer.corpora.manifest  # noqa: F401  (registers the reader)
from mmfer.corpora.base import READERS, register_reader
from mmfer.corpora.labels import LabelPolicy, parse_policy
from mmfer.corpora.schema import COLUMNS, Corpus, load, save
from mmfer.errors import CorpusError

__all__ = ["COLUMNS", "Corpus", "LabelPolicy", "READERS", "detect", "load", "parse_policy", "read_corpus",
           "register_reader", "save"]


def detect(path: str | Path) -> str:
    """Which reader a path wants (the first registered reader whose ``detect`` says yes)."""
    p = Path(path).expanduser()
    if not p.exists():
        raise CorpusError("corpus path not found", p)
    for name, reader in READERS.items():
        if reader.detect(p):
            return name
    raise CorpusError("cannot tell the corpus type: expected an IEMOCAP_full_release folder "
                      f"(Session1..Session5 inside) or a .csv manifest; pass --corpus ({', '.join(READERS)})", p)


def read_corpus(path: str | Path, corpus: str | None = None, labels: str | dict | None = None,
                strict: bool = False, allow_outside: bool = False) -> Corpus:
    kind = corpus or detect(path)
    if kind not in READERS:
        raise CorpusError(f"unknown corpus type {kind!r}; choose one of {', '.join(READERS)}")
    return READERS[kind].read(path, labels, strict=strict, allow_outside=allow_outside)
