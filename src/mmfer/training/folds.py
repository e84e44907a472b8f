"""Speaker-independent folds: leave one session out, with validation speakers carved from training."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from mmfer.errors import MmferError


@dataclass
class Fold:
    index: int
    name: str                 # the held-out session (or speaker group)
    train: list[str]
    val: list[str]
    test: list[str]
    val_speakers: list[str]
    test_speakers: list[str]


def make_folds(table: pd.DataFrame, val_speakers: int = 2, k: int = 5) -> list[Fold]:
    """Leave-one-session-out when the corpus has 2+ sessions, else ``k`` speaker-grouped folds.

    Validation = ``val_speakers`` training speakers (rotating with the fold, so each fold picks others);
    they choose the epoch. The test speakers are in neither training nor validation.
    """
    sessions = sorted(s for s in table["session"].unique() if s)
    speakers = sorted(table["speaker"].unique())
    if len(sessions) >= 2:
        groups = [(s, sorted(table.loc[table["session"] == s, "speaker"].unique())) for s in sessions]
    else:
        k = min(k, len(speakers))
        if k < 2:
            raise MmferError("cross-validation needs at least 2 speakers (or 2 sessions)")
        groups = [(f"group{i + 1}", speakers[i::k]) for i in range(k)]
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
