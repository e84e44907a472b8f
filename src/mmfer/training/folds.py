"""Evaluation protocols: which utterances train, choose the epoch (validation) and test, per fold.

* ``loso-session``: leave one session out (IEMOCAP's protocol); validation = training speakers.
* ``loso-speaker``: leave one speaker out.
* ``kfold-speaker``: ``k`` folds of contiguous speaker groups (sorted ids: RAVDESS A01-04, A05-08, ...).
* ``split``: the corpus's fixed ``train``/``dev``/``test`` split (MELD): one fold, dev chooses the epoch.
* ``auto``: ``split`` when the corpus has one, else ``loso-session`` with 2+ sessions, else ``kfold-speaker``.

In every speaker protocol the validation speakers (rotating with the fold) are carved from the training
speakers, so the test speakers are in neither training nor validation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from mmfer.errors import MmferError

PROTOCOLS = ("auto", "loso-session", "loso-speaker", "kfold-speaker", "split")


@dataclass
class Fold:
    index: int
    name: str                 # the held-out session, speaker, speaker group, or 'test'
    train: list[str]
    val: list[str]
    test: list[str]
    val_speakers: list[str]
    test_speakers: list[str]


def resolve_protocol(table: pd.DataFrame, protocol: str = "auto") -> str:
    if protocol not in PROTOCOLS:
        raise MmferError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    if protocol != "auto":
        return protocol
    if "split" in table and set(table["split"].fillna("")) >= {"train", "test"}:
        return "split"
    if len({s for s in table["session"] if s}) >= 2:
        return "loso-session"
    return "kfold-speaker"


def make_folds(table: pd.DataFrame, val_speakers: int = 2, k: int = 5, protocol: str = "auto") -> list[Fold]:
    protocol = resolve_protocol(table, protocol)
    if protocol == "split":
        return [_split_fold(table)]
    speakers = sorted(table["speaker"].unique())
    if protocol == "loso-session":
        sessions = sorted(s for s in table["session"].unique() if s)
        if len(sessions) < 2:
            raise MmferError("protocol loso-session needs a corpus with 2+ sessions; use kfold-speaker")
        groups = [(s, sorted(table.loc[table["session"] == s, "speaker"].unique())) for s in sessions]
    elif protocol == "loso-speaker":
        groups = [(s, [s]) for s in speakers]
    else:
        k = min(k, len(speakers))
        if k < 2:
            raise MmferError("cross-validation needs at least 2 speakers (or 2 sessions)")
        groups = [(f"group{i + 1}", [str(s) for s in g]) for i, g in enumerate(np.array_split(speakers, k))]
    folds = []
    for i, (name, test_spk) in enumerate(groups):
        rest = [s for s in speakers if s not in test_spk]
        n_val = min(val_speakers, len(rest) - 1)
        if n_val < 1:
            raise MmferError(f"fold {name}: too few training speakers to hold out validation speakers")
        start = (i * n_val) % len(rest)
        val_spk = [rest[(start + j) % len(rest)] for j in range(n_val)]
        spk = table["speaker"]
        folds.append(Fold(
            index=i, name=name,
            train=table.loc[~spk.isin(test_spk) & ~spk.isin(val_spk), "utt_id"].tolist(),
            val=table.loc[spk.isin(val_spk), "utt_id"].tolist(),
            test=table.loc[spk.isin(test_spk), "utt_id"].tolist(),
            val_speakers=val_spk, test_speakers=list(test_spk),
        ))
    return folds


def _split_fold(table: pd.DataFrame) -> Fold:
    split = table["split"].fillna("")
    parts = {p: table.loc[split == p, "utt_id"].tolist() for p in ("train", "dev", "test")}
    missing = [p for p, ids in parts.items() if not ids]
    if missing:
        raise MmferError(f"protocol split needs train, dev and test utterances; none in {', '.join(missing)}")
    spk = lambda ids: sorted(table.set_index("utt_id").loc[ids, "speaker"].unique())  # noqa: E731
    return Fold(0, "test", parts["train"], parts["dev"], parts["test"], spk(parts["dev"]), spk(parts["test"]))
