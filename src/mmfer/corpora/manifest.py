"""Reader for a generic CSV manifest: the way every corpus other than IEMOCAP comes in.

Columns (case-insensitive; aliases in brackets):
  id [utt_id, utterance, utterance_id, name]        required
  audio [path, file, wav, audio_path, filename]     path relative to the CSV; optional for the corpus
  text [transcript, transcription, sentence]        optional for the corpus
  label [emotion, emo, class, category]             required
  speaker [spk, speaker_id]                         required (folds are speaker-independent)
  session [fold, group]                             optional: leave-one-session-out when present
  gender [sex]                                      optional: F/M (female/male accepted)
At least one of audio/text must be present; the corpus then has only that modality.
"""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

from mmfer.corpora.labels import LabelPolicy, keep_labelled, parse_policy
from mmfer.corpora.schema import Corpus, to_table
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
}
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


def read_manifest(path: str | Path, labels: str | dict | LabelPolicy | None = None,
                  strict: bool = False) -> Corpus:
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise CorpusError("manifest file not found", path)
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        try:
            header = next(reader)
        except StopIteration:
            raise CorpusError("manifest is empty", path) from None
        cols = _columns(header, path)
        index = {canon: header.index(name) for canon, name in cols.items()}
        modalities = tuple(m for m in ("audio", "text") if m in cols)
        problems: list[str] = []
        dropped: Counter = Counter()
        rows: list[dict] = []
        seen: set[str] = set()
        for line_no, values in enumerate(reader, start=2):
            if not any(v.strip() for v in values):
                continue
            if len(values) != len(header):
                _bad(problems, strict, dropped, f"{len(values)} fields where the header has {len(header)}",
                     path, line_no)
                continue
            get = {c: values[i].strip() for c, i in index.items()}
            empty = [c for c in ("id", "label", "speaker", *modalities) if not get.get(c)]
            if empty:
                _bad(problems, strict, dropped, f"empty {', '.join(empty)}", path, line_no)
                continue
            if get["id"] in seen:
                _bad(problems, strict, dropped, f"duplicate id {get['id']!r}", path, line_no)
                continue
            seen.add(get["id"])
            raw_text = get.get("text", "")
            if "text" in modalities and is_noise_only(raw_text):
                dropped["noise_only"] += 1
                continue
            text = clean_text(raw_text)
            audio = ""
            if "audio" in modalities:
                audio = str((path.parent / get["audio"]).resolve())
            rows.append({
                "utt_id": get["id"], "corpus": "manifest", "session": get.get("session", ""),
                "speaker": get["speaker"], "gender": GENDERS.get(get.get("gender", "").lower(), ""),
                "dialog": "", "method": "", "start": float("nan"), "end": float("nan"),
                "transcript": raw_text, "text": text, "words": words_of(text), "word_start": None,
                "word_end": None, "label_raw": get["label"], "label": None, "votes": [],
                "valence": float("nan"), "activation": float("nan"), "dominance": float("nan"),
                "audio": audio,
            })
    parsed = len(rows) + sum(dropped.values())
    policy = labels if isinstance(labels, LabelPolicy) else parse_policy(
        labels, sorted({r["label_raw"] for r in rows}))
    kept = keep_labelled(rows, policy, dropped)
    table = to_table(kept)
    return Corpus(
        name="manifest", root=str(path), table=table, modalities=modalities,
        labels=sorted(table["label"].unique()), policy=policy.name, parsed=parsed, dropped=dropped,
        missing_alignment=len(kept), problems=problems,
    )


def _bad(problems: list[str], strict: bool, dropped: Counter, message: str, path: Path, line: int) -> None:
    err = CorpusError(message, path, line)
    if strict:
        raise err
    problems.append(str(err))
    dropped["bad_row"] += 1
