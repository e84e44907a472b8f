"""The corpus table: one row per kept utterance. Every later stage reads this table, so its columns,
types and meanings are written down here once."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from mmfer.io import atomic_path

# name -> (pyarrow type, meaning)
COLUMNS: dict[str, tuple[pa.DataType, str]] = {
    "utt_id": (pa.string(), "utterance id, unique in the corpus (IEMOCAP: Ses01F_impro01_M003)"),
    "corpus": (pa.string(), "reader that produced the row: 'iemocap' or 'manifest'"),
    "session": (pa.string(), "recording session (Ses01..Ses05); '' when the corpus has none"),
    "speaker": (pa.string(), "speaker id (IEMOCAP: session + gender letter of the utterance id, Ses01M)"),
    "gender": (pa.string(), "'F', 'M' or '' when unknown"),
    "dialog": (pa.string(), "dialog (dialogue) id (Ses01F_impro01); '' when the corpus has none"),
    "turn": (pa.float64(), "position of the utterance in its dialog (NaN when unknown; start orders then)"),
    "split": (pa.string(), "'train', 'dev', 'test' for a corpus with a fixed split, else ''"),
    "method": (pa.string(), "'impro', 'script' or '' when unknown"),
    "start": (pa.float64(), "start time of the turn inside its dialog, seconds (NaN when unknown)"),
    "end": (pa.float64(), "end time of the turn inside its dialog, seconds (NaN when unknown)"),
    "transcript": (pa.string(), "raw transcript as the corpus gives it ('' when the corpus has no text)"),
    "text": (pa.string(), "cleaned transcript: noise tokens removed except [LAUGHTER]"),
    "words": (pa.list_(pa.string()), "word list (lower case; forced-alignment words when available)"),
    "word_start": (pa.list_(pa.float64()), "word start times in the utterance, s; null without alignment"),
    "word_end": (pa.list_(pa.float64()), "word end times in the utterance, s; null without alignment"),
    "label_raw": (pa.string(), "label code as annotated (IEMOCAP: neu, fru, ang, sad, hap, exc, ..., xxx)"),
    "label": (pa.string(), "refined label after the label policy (the training target)"),
    "votes": (pa.list_(pa.string()), "annotators' categorical votes as label codes, one per category named"),
    "valence": (pa.float64(), "dimensional rating 1..5 (NaN when unknown)"),
    "activation": (pa.float64(), "dimensional rating 1..5 (NaN when unknown)"),
    "dominance": (pa.float64(), "dimensional rating 1..5 (NaN when unknown)"),
    "audio": (pa.string(), "absolute path of the utterance's audio file ('' when the corpus has no audio)"),
}

SCHEMA = pa.schema([pa.field(name, typ) for name, (typ, _) in COLUMNS.items()])
MODALITIES = ("audio", "text")


@dataclass
class Corpus:
    """A read corpus: the kept utterances plus the bookkeeping of what was dropped and why."""

    name: str
    root: str
    table: pd.DataFrame
    modalities: tuple[str, ...]
    labels: list[str]
    policy: str
    parsed: int = 0
    dropped: Counter = field(default_factory=Counter)
    missing_alignment: int = 0
    problems: list[str] = field(default_factory=list)
    capabilities: dict[str, bool] = field(default_factory=dict)  # see corpora.base.CAPABILITIES

    def has(self, capability: str) -> bool:
        return bool(self.capabilities.get(capability, False))

    def require(self, modalities: tuple[str, ...] | list[str], what: str) -> None:
        """Refuse (clearly) a model or stage that needs a modality this corpus lacks."""
        from mmfer.errors import MmferError

        missing = [m for m in modalities if m not in self.modalities]
        if missing:
            raise MmferError(
                f"{what} needs the {' and '.join(missing)} modality, but corpus '{self.root}' has only "
                f"{', '.join(self.modalities) or 'none'}; choose a model that uses "
                f"{' or '.join(self.modalities)} only"
            )

    def meta(self) -> dict:
        return {
            "name": self.name,
            "root": self.root,
            "modalities": list(self.modalities),
            "labels": self.labels,
            "policy": self.policy,
            "parsed": self.parsed,
            "dropped": dict(sorted(self.dropped.items())),
            "missing_alignment": self.missing_alignment,
            "problems": self.problems,
            "capabilities": self.capabilities,
        }


def to_table(rows: list[dict]) -> pd.DataFrame:
    """Build a table with exactly the schema's columns and types from row dicts."""
    arrow = pa.Table.from_pylist(rows, schema=SCHEMA) if rows else SCHEMA.empty_table()
    return arrow.to_pandas()


def validate(df: pd.DataFrame) -> None:
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"corpus table lacks columns {missing}")
    if df["utt_id"].duplicated().any():
        dup = df.loc[df["utt_id"].duplicated(), "utt_id"].iloc[0]
        raise ValueError(f"duplicate utterance id {dup!r}")


def save(corpus: Corpus, path: str | Path) -> None:
    """Write the table as Parquet, with the corpus bookkeeping in the file's metadata."""
    validate(corpus.table)
    arrow = pa.Table.from_pandas(corpus.table[list(COLUMNS)], schema=SCHEMA, preserve_index=False)
    arrow = arrow.replace_schema_metadata({b"mmfer.corpus": json.dumps(corpus.meta()).encode()})
    with atomic_path(path) as tmp:
        pq.write_table(arrow, tmp)


def load(path: str | Path) -> Corpus:
    arrow = pq.read_table(path)
    meta = json.loads((arrow.schema.metadata or {}).get(b"mmfer.corpus", b"{}"))
    table = arrow.to_pandas()
    return Corpus(
        name=meta.get("name", "unknown"),
        root=meta.get("root", ""),
        table=table,
        modalities=tuple(meta.get("modalities", MODALITIES)),
        labels=meta.get("labels", sorted(table["label"].unique())),
        policy=meta.get("policy", ""),
        parsed=meta.get("parsed", len(table)),
        dropped=Counter(meta.get("dropped", {})),
        missing_alignment=meta.get("missing_alignment", 0),
        problems=meta.get("problems", []),
        capabilities=meta.get("capabilities", {}),
    )
