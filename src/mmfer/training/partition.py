"""A fold: which utterances train, choose the epoch (validation) and test; and the one rule every protocol
uses to hold validation speakers out of the training part."""

from __future__ import annotations

from dataclasses import dataclass

from mmfer.errors import MmferError


@dataclass
class Fold:
    index: int
    name: str                 # the held-out session, speaker, speaker group, or 'test'
    train: list[str]
    val: list[str]
    test: list[str]
    val_speakers: list[str]
    test_speakers: list[str]
    seed: int | None = None   # in a run of several seeds: which one this copy of the fold trains with


def carve_validation(ids: list[str], speaker: dict, val_speakers: int, i: int, what: str
                     ) -> tuple[list[str], list[str], list[str]]:
    """Split training utterances into (train, validation, validation speakers): ``val_speakers`` whole
    speakers, rotating with the fold number ``i`` through the sorted training speakers."""
    rest = sorted({speaker[u] for u in ids})
    n_val = min(val_speakers, len(rest) - 1)
    if n_val < 1:
        raise MmferError(f"{what}: too few training speakers to hold out validation speakers")
    start = (i * n_val) % len(rest)
    val_spk = [rest[(start + j) % len(rest)] for j in range(n_val)]
    chosen = set(val_spk)
    return ([u for u in ids if speaker[u] not in chosen], [u for u in ids if speaker[u] in chosen],
            [str(s) for s in val_spk])
