"""Evaluation protocols: which utterances train, choose the epoch (validation) and test, per fold.

* ``loso-session``: leave one session out (IEMOCAP's protocol); validation = training speakers.
* ``loso-speaker``: leave one speaker out.
* ``kfold-speaker``: ``k`` folds of contiguous speaker groups (sorted ids: RAVDESS A01-04, A05-08, ...).
* ``split``: the corpus's fixed ``train``/``dev``/``test`` split (MELD): one fold, dev chooses the epoch.
* ``file``: the partition in ``train.folds_file`` (a run's ``folds.json``, a utterance -> fold table, or
  EmoBox's published folds; see ``training.fold_files``).
* ``auto``: ``split`` when the corpus has one, else ``loso-session`` with 2+ sessions, else ``kfold-speaker``.

In every speaker protocol the validation speakers (rotating with the fold) are carved from the training
speakers, so the test speakers are in neither training nor validation.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from mmfer.errors import MmferError
from mmfer.training.fold_files import read_folds_file
from mmfer.training.partition import Fold, carve_validation

__all__ = ["Fold", "PROTOCOLS", "make_folds", "resolve_protocol"]

PROTOCOLS = ("auto", "loso-session", "loso-speaker", "kfold-speaker", "split", "file")


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


def make_folds(table: pd.DataFrame, val_speakers: int = 2, k: int = 5, protocol: str = "auto",
               folds_file: str | None = None, warn=None) -> list[Fold]:
    protocol = resolve_protocol(table, protocol)
    if protocol == "file":
        if not folds_file:
            raise MmferError("protocol file needs train.folds_file (or --folds-file): a folds.json, a .csv of "
                             "utt_id,fold[,split], or an EmoBox corpus folder")
        folds, dropped = read_folds_file(folds_file, table, val_speakers)
        if dropped and warn:
            warn(f"{folds_file}: {dropped} utterance(s) of the folds file are not in the store; left out")
        return folds
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
    spk = table["speaker"]
    for i, (name, test_spk) in enumerate(groups):
        train, val, val_spk = carve_validation(table.loc[~spk.isin(test_spk), "utt_id"].tolist(),
                                               dict(zip(table["utt_id"], spk)), val_speakers, i, f"fold {name}")
        folds.append(Fold(index=i, name=name, train=train, val=val,
                          test=table.loc[spk.isin(test_spk), "utt_id"].tolist(),
                          val_speakers=val_spk, test_speakers=list(test_spk)))
    return folds


def _split_fold(table: pd.DataFrame) -> Fold:
    split = table["split"].fillna("")
    parts = {p: table.loc[split == p, "utt_id"].tolist() for p in ("train", "dev", "test")}
    missing = [p for p, ids in parts.items() if not ids]
    if missing:
        raise MmferError(f"protocol split needs train, dev and test utterances; none in {', '.join(missing)}")
    spk = lambda ids: sorted(table.set_index("utt_id").loc[ids, "speaker"].unique())  # noqa: E731
    return Fold(0, "test", parts["train"], parts["dev"], parts["test"], spk(parts["dev"]), spk(parts["test"]))
