"""The corpus reader protocol, the problem log every reader shares, and the shared finishing step.

A reader (after lhotse's one ``prepare_X`` per corpus, CLI kept apart) is an object with

* ``name``: what ``--corpus`` calls it;
* ``detect(path) -> bool``: whether a path looks like its corpus (used when ``--corpus`` is not given);
* ``read(path, labels, strict, allow_outside) -> Corpus``: rows of the schema (``corpora.schema``), built with a
  :class:`ProblemLog` and handed to :func:`finish`.

Register it with :func:`register_reader`; ``mmfer corpus inspect``, ``prepare`` and the quickstart find it
through ``READERS``. Later stages never test a corpus's name: they ask its ``capabilities``.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Protocol

from mmfer.corpora.labels import LabelPolicy, keep_labelled
from mmfer.corpora.schema import Corpus, to_table
from mmfer.errors import CorpusError

CAPABILITIES = {
    "word_times": "words have start/end times (forced alignment)",
    "dialogues": "utterances belong to dialogues in a known order (dialogue context for text)",
    "sessions": "recording sessions: leave-one-session-out folds",
    "splits": "a fixed train/dev/test split",
}


class CorpusReader(Protocol):
    name: str

    def detect(self, path: Path) -> bool: ...

    def read(self, path: str | Path, labels: str | dict | LabelPolicy | None = None,
             strict: bool = False, allow_outside: bool = False) -> Corpus: ...


READERS: dict[str, CorpusReader] = {}


def register_reader(reader: CorpusReader) -> CorpusReader:
    if reader.name in READERS:
        raise ValueError(f"corpus reader {reader.name!r} is registered twice")
    READERS[reader.name] = reader
    return reader


class ProblemLog:
    """Malformed input, each named with file and line: collected (and counted under a drop reason) or,
    with ``strict``, raised at the first one."""

    def __init__(self, strict: bool = False):
        self.strict = strict
        self.problems: list[str] = []
        self.dropped: Counter = Counter()

    def problem(self, message: str, path: str | Path, line: int | None = None, drop: str | None = None) -> None:
        err = CorpusError(message, path, line)
        if self.strict:
            raise err
        self.problems.append(str(err))
        if drop:
            self.dropped[drop] += 1

    def drop(self, reason: str) -> None:
        self.dropped[reason] += 1


def finish(name: str, root: str | Path, rows: list[dict], policy: LabelPolicy, log: ProblemLog,
           modalities: tuple[str, ...], capabilities: dict[str, bool]) -> Corpus:
    """Apply the label policy (counting drops), build the typed table, and the :class:`Corpus`."""
    unknown = set(capabilities) - set(CAPABILITIES)
    if unknown:
        raise ValueError(f"unknown capabilities {sorted(unknown)}")
    parsed = len(rows) + sum(log.dropped.values())
    kept = keep_labelled(rows, policy, log.dropped)
    table = to_table(kept)
    return Corpus(
        name=name, root=str(root), table=table, modalities=modalities,
        labels=sorted(table["label"].unique()), policy=policy.name, parsed=parsed, dropped=log.dropped,
        missing_alignment=sum(1 for r in kept if r["word_start"] is None), problems=log.problems,
        capabilities={k: bool(capabilities.get(k, False)) for k in CAPABILITIES},
    )
