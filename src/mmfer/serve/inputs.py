"""What batch prediction reads: files, folders and CSV manifests become *items* (one input each, keyed
for resuming); an item becomes *units* (a short file or segment is one utterance, as in training; a long
recording or a long manifest segment is cut into speech segments by speech.segment, streamed)."""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mmfer.errors import MmferError
from mmfer.features.audio import SAMPLE_RATE, load_audio

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".mp3", ".oga", ".opus"}


MAX_UTTERANCE = 20.0  # seconds: a longer file is a recording to segment, not one utterance


MAX_TIME = 7 * 24 * 3600.0  # a manifest time past a week is not a time in a recording


@dataclass
class Item:
    """One input: a file (whole, or a segment of it) with what a manifest says about it."""

    file: str
    key: str  # what identifies it in the output, for resuming
    text: str | None = None
    speaker: str | None = None
    dialogue: str | None = None
    start: float | None = None
    end: float | None = None
    error: str | None = None


def _manifest_items(path: Path, allow_outside: bool) -> list[Item]:
    """A CSV with an audio column (any of the corpus manifest's names) and optional text, speaker,
    dialogue, start, end. Relative paths are relative to the manifest."""
    from mmfer.corpora.manifest import ALIASES, csv_rows, seconds

    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv_rows(csv.reader(fh), path)
        try:
            _, header = next(reader)
        except StopIteration:
            raise MmferError(f"{path}: the manifest is empty") from None
        lower = {h.strip().lower(): i for i, h in enumerate(header)}
        col = {c: next((lower[n] for n in names if n in lower), None) for c, names in ALIASES.items()}
        if col["audio"] is None:
            raise MmferError(f"{path}:1: a prediction manifest needs an audio column ({', '.join(ALIASES['audio'])})")
        items, seen = [], set()
        for line, values in reader:
            if not any(v.strip() for v in values):
                continue
            if len(values) != len(header):
                raise MmferError(f"{path}:{line}: {len(values)} fields where the header has {len(header)}")

            def get(c: str, values=values) -> str:
                return values[col[c]].strip() if col[c] is not None else ""

            given = Path(get("audio"))
            audio = (path.parent / given).resolve()
            if not given.is_absolute() and not audio.is_relative_to(path.parent.resolve()) and not allow_outside:
                raise MmferError(f"{path}:{line}: audio path {str(given)!r} leaves the manifest's folder; move the "
                                 "file or pass --allow-outside")
            try:
                start, end = seconds(get("start")), seconds(get("end"))
            except ValueError:
                raise MmferError(f"{path}:{line}: start/end must be seconds or HH:MM:SS,mmm") from None
            start = None if math.isnan(start) else start
            end = None if math.isnan(end) else end
            if (start is None) != (end is None) and get("start") and get("end"):
                raise MmferError(f"{path}:{line}: give both start and end, or neither")
            if start is not None and end is not None and not (
                    math.isfinite(start) and math.isfinite(end) and 0 <= start < end <= MAX_TIME):
                raise MmferError(f"{path}:{line}: start {get('start')!r} / end {get('end')!r}: need 0 <= start < end, "
                                 "finite seconds (or HH:MM:SS,mmm)")
            key = get("id") or f"{path.name}:{line}"  # a row is an input: never keyed by its audio alone
            if key in seen:
                raise MmferError(f"{path}:{line}: duplicate id {key!r}: every row needs its own id (or none)")
            seen.add(key)
            items.append(Item(str(audio), key, get("text") or None, get("speaker") or None, get("dialogue") or None,
                              start, end))
    return items


def expand_inputs(inputs: list[Path], allow_outside: bool = False) -> list[Item]:
    """Files, folders (recursively, audio suffixes only, sorted) and .csv manifests, in the order given."""
    items: list[Item] = []
    for raw in inputs:
        p = Path(raw).expanduser()
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in AUDIO_SUFFIXES)
            if not found:
                raise MmferError(f"{p}: no audio files ({', '.join(sorted(AUDIO_SUFFIXES))}) in this folder")
            items += [Item(str(f.resolve()), str(f.resolve())) for f in found]
        elif p.suffix.lower() == ".csv" and p.is_file():
            items += _manifest_items(p.resolve(), allow_outside)
        else:
            items.append(Item(str(p.resolve()), str(p.resolve())))  # a missing file becomes an error row
    return items


@dataclass
class Unit:
    start: float
    end: float
    signal: np.ndarray
    text: str | None = None


def units_of(item: Item, max_utterance: float, min_seconds: float, max_seconds: float) -> Iterator[Unit]:
    """A short file or a short manifest segment: one unit; a long recording or a long manifest segment: its
    speech segments (a file streamed; a segment, at most MAX_SECONDS, read and then cut)."""
    from mmfer.features.audio import MAX_SECONDS, audio_header, segment_of
    from mmfer.speech.segment import segments

    info = audio_header(item.file)
    duration = info.frames / info.samplerate
    if item.start is not None and item.end is not None and item.end - item.start > max_utterance:
        part = segment_of(duration, item.start, item.end)
        x = load_audio(item.file, start=item.start, end=item.end, max_seconds=MAX_SECONDS)
        offset = part[0] if part is not None else 0.0
        for seg in segments(x, min_seconds, max_seconds):
            yield Unit(offset + seg.start, offset + seg.end, seg.signal, None)  # its transcript cannot be split
    elif item.start is not None and item.end is not None:
        x = load_audio(item.file, start=item.start, end=item.end, max_seconds=max_utterance)
        yield Unit(item.start, item.start + len(x) / SAMPLE_RATE, x, item.text)
    elif duration <= max_utterance:
        x = load_audio(item.file, max_seconds=max_utterance)
        yield Unit(0.0, len(x) / SAMPLE_RATE, x, item.text)
    else:
        for seg in segments(item.file, min_seconds, max_seconds):
            yield Unit(seg.start, seg.end, seg.signal, None)  # a whole-file transcript cannot be split


def is_short(item: Item, max_utterance: float) -> bool:
    from mmfer.features.audio import audio_header

    if item.start is not None and item.end is not None:
        return item.end - item.start <= max_utterance
    info = audio_header(item.file)
    return info.frames / info.samplerate <= max_utterance
