"""Corpus readers: a corpus on disk in, one validated utterance table (:class:`Corpus`) out."""

from __future__ import annotations

from pathlib import Path

from mmfer.corpora.iemocap import is_iemocap_root, read_iemocap
from mmfer.corpora.labels import LabelPolicy, parse_policy
from mmfer.corpora.manifest import read_manifest
from mmfer.corpora.schema import COLUMNS, Corpus, load, save
from mmfer.errors import CorpusError

READERS = ("iemocap", "manifest")

__all__ = ["COLUMNS", "Corpus", "LabelPolicy", "READERS", "detect", "load", "parse_policy", "read_corpus",
           "save"]


def detect(path: str | Path) -> str:
    """Which reader a path wants: a folder with Session1..5 is IEMOCAP, a .csv file is a manifest."""
    p = Path(path).expanduser()
    if not p.exists():
        raise CorpusError("corpus path not found", p)
    if p.is_file() and p.suffix.lower() == ".csv":
        return "manifest"
    if p.is_dir() and is_iemocap_root(p):
        return "iemocap"
    raise CorpusError("cannot tell the corpus type: expected an IEMOCAP_full_release folder "
                      "(Session1..Session5 inside) or a .csv manifest; pass --corpus", p)


def read_corpus(path: str | Path, corpus: str | None = None, labels: str | dict | None = None,
                strict: bool = False) -> Corpus:
    kind = corpus or detect(path)
    if kind == "iemocap":
        return read_iemocap(path, labels or "4class", strict=strict)
    if kind == "manifest":
        return read_manifest(path, labels, strict=strict)
    raise CorpusError(f"unknown corpus type {kind!r}; choose one of {', '.join(READERS)}")
