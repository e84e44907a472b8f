"""Reader for a generic CSV manifest: the way every corpus other than IEMOCAP comes in.

Columns (case-insensitive; aliases in brackets):
  id [utt_id, utterance, utterance_id, name]        required
  audio [path, file, wav, audio_path, filename]     path relative to the CSV; optional for the corpus
  text [transcript, transcription, sentence]        optional for the corpus
  label [emotion, emo, class, category]             required
  speaker [spk, speaker_id]                         required (folds are speaker-independent)
  session [fold, group]                             optional: leave-one-session-out when present
  gender [sex]                                      optional: F/M (female/male accepted)
  dialogue [dialog, conversation, dialogue_id]      optional: utterances of one conversation
  turn [utterance_index, position]                  optional: order inside the dialogue
  start, end                                        optional: seconds or HH:MM:SS,mmm (order when no turn)
  split [partition, subset]                         optional: train/dev/test (the fixed-split protocol)
At least one of audio/text must be present; the corpus then has only that modality.
"""

from __future__ import annotations

import csv
import io
import math
import re
from pathlib import Path

from mmfer.corpora.base import ProblemLog, finish, register_reader
from mmfer.corpora.labels import LabelPolicy, parse_policy
from mmfer.corpora.schema import Corpus
from mmfer.corpora.text import clean_text, is_noise_only, words_of
from mmfer.errors import CorpusError

ALIASES: dict[str, tuple[str, ...]] = {
    "id": ("id", "utt_id", "utterance", "utterance_id", "name"),
    "audio": ("audio", "path", "file", "wav", "audio_path", "filename"),
    "text": ("text", "transcript", "transcription", "sentence"),
    "label": ("label", "emotion", "emo", "class", "category"),
    "speaker": ("speaker", "spk", "speaker_id"),
    "session": ("session", "fold", "group"),
    "gender": ("gender", "sex"),
    "dialogue": ("dialogue", "dialog", "conversation", "dialogue_id"),
    "turn": ("turn", "utterance_index", "position"),
    "start": ("start", "start_time"),
    "end": ("end", "end_time"),
    "split": ("split", "partition", "subset"),
}
SPLITS = {"train": "train", "dev": "dev", "val": "dev", "valid": "dev", "validation": "dev", "test": "test"}
TIME = re.compile(r"^(?:(\d+):)?(\d+):(\d+(?:[.,]\d+)?)$")
GENDERS = {"f": "F", "female": "F", "w": "F", "woman": "F", "m": "M", "male": "M", "man": "M"}


def _columns(header: list[str], path: Path) -> dict[str, str]:
    """canonical name -> the CSV's own column name."""
    lower = {h.strip().lower(): h for h in header}
    found: dict[str, str] = {}
    for canon, names in ALIASES.items():
        hits = [lower[n] for n in names if n in lower]
        if len(hits) > 1:
            raise CorpusError(f"columns {hits} all mean '{canon}': keep one", path, 1)
        if hits:
            found[canon] = hits[0]
    missing = [c for c in ("id", "label", "speaker") if c not in found]
    if missing:
        raise CorpusError(f"manifest header lacks required column(s) {missing}; found {header}", path, 1)
    if "audio" not in found and "text" not in found:
        raise CorpusError("manifest needs an 'audio' or a 'text' column (or both)", path, 1)
    return found


def seconds(value: str) -> float:
    """'12.5', '00:16:16,059' or '16:16.059' -> seconds; '' -> NaN; anything else raises ValueError."""
    value = value.strip()
    if not value:
        return math.nan
    m = TIME.match(value)
    if m:
        h, mnt, sec = m.groups()
        return int(h or 0) * 3600 + int(mnt) * 60 + float(sec.replace(",", "."))
    return float(value)


def _text(path: Path) -> str:
    """The manifest as text; bytes that are not UTF-8 are named with their line."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[:err.start].count(b"\n") + 1
        raise CorpusError(f"byte 0x{raw[err.start]:02x} is not UTF-8: save the manifest as UTF-8 (e.g. "
                          "iconv -f latin1 -t utf-8)", path, line) from None


def csv_rows(reader, path: Path):
    """(line number, fields) of each row of a csv.reader; a row the csv module refuses (e.g. a cell longer
    than its bounded field limit) is a one-line error naming the file and line, not a traceback."""
    while True:
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as err:
            raise CorpusError(f"not a readable CSV row ({err}; cells are limited to {csv.field_size_limit():,} "
                              "characters)", path, reader.line_num) from None
        yield reader.line_num, values


def read_manifest(path: str | Path, labels: str | dict | LabelPolicy | None = None,
                  strict: bool = False, allow_outside: bool = False) -> Corpus:
    """``allow_outside``: relative audio paths may leave the manifest's folder (``../x.wav``)."""
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise CorpusError("manifest file not found", path)
    log = ProblemLog(strict)
    rows: list[dict] = []
    outside: list[str] = []
    with io.StringIO(_text(path), newline="") as fh:
        rows_in = csv_rows(csv.reader(fh), path)
        try:
            _, header = next(rows_in)
        except StopIteration:
            raise CorpusError("manifest is empty", path) from None
        cols = _columns(header, path)
        index = {canon: header.index(name) for canon, name in cols.items()}
        modalities = tuple(m for m in ("audio", "text") if m in cols)
        seen: set[str] = set()
        for line_no, values in rows_in:
            if not any(v.strip() for v in values):
                continue
            if len(values) != len(header):
                log.problem(f"{len(values)} fields where the header has {len(header)}", path, line_no, "bad_row")
                continue
            get = {c: values[i].strip() for c, i in index.items()}
            empty = [c for c in ("id", "label", "speaker", *modalities) if not get.get(c)]
            if empty:
                log.problem(f"empty {', '.join(empty)}", path, line_no, "bad_row")
                continue
            if get["id"] in seen:
                log.problem(f"duplicate id {get['id']!r}", path, line_no, "bad_row")
                continue
            try:
                turn, start, end = (seconds(get.get(c, "")) for c in ("turn", "start", "end"))
            except ValueError:
                log.problem("turn/start/end must be numbers (start/end may be HH:MM:SS,mmm)", path, line_no, "bad_row")
                continue
            split = get.get("split", "").lower()
            if "split" in cols and split not in SPLITS:
                log.problem(f"split {split!r} is not one of train/dev/test", path, line_no, "bad_row")
                continue
            seen.add(get["id"])
            raw_text = get.get("text", "")
            if "text" in modalities and is_noise_only(raw_text):
                log.drop("noise_only")
                continue
            text = clean_text(raw_text)
            audio = ""
            if "audio" in modalities:
                given = Path(get["audio"])
                resolved = (path.parent / given).resolve()
                if not resolved.is_relative_to(path.parent):
                    if not given.is_absolute() and not allow_outside:
                        log.problem(f"audio path {get['audio']!r} leaves the manifest's folder; move the file or "
                                    "pass --allow-outside", path, line_no, "bad_row")
                        continue
                    outside.append(get["id"])
                audio = str(resolved)
            rows.append({
                "utt_id": get["id"], "corpus": "manifest", "session": get.get("session", ""),
                "speaker": get["speaker"], "gender": GENDERS.get(get.get("gender", "").lower(), ""),
                "dialog": get.get("dialogue", ""), "turn": turn, "split": SPLITS.get(split, ""),
                "method": "", "start": start, "end": end,
                "transcript": raw_text, "text": text, "words": words_of(text), "word_start": None,
                "word_end": None, "label_raw": get["label"], "label": None, "votes": [],
                "valence": float("nan"), "activation": float("nan"), "dominance": float("nan"),
                "audio": audio,
            })
    policy = labels if isinstance(labels, LabelPolicy) else parse_policy(
        labels, sorted({r["label_raw"] for r in rows}))
    ordered = "dialogue" in cols and ("turn" in cols or "start" in cols)
    if outside:
        log.problems.append(f"{path}: {len(outside)} audio file(s) outside the manifest's folder (absolute paths"
                            f"{' or --allow-outside' if allow_outside else ''}), e.g. {outside[0]!r}")
    return finish("manifest", path, rows, policy, log, modalities,
                  {"dialogues": ordered, "sessions": "session" in cols, "splits": "split" in cols})


class ManifestReader:
    """``--corpus manifest``: a CSV file with one row per utterance."""

    name = "manifest"

    def detect(self, path: Path) -> bool:
        return Path(path).is_file() and Path(path).suffix.lower() == ".csv"

    def read(self, path: str | Path, labels: str | dict | LabelPolicy | None = None, strict: bool = False,
             allow_outside: bool = False) -> Corpus:
        return read_manifest(path, labels, strict=strict, allow_outside=allow_outside)


register_reader(ManifestReader())
