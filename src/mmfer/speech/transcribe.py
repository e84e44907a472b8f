"""``prepare --transcribe``: replace a corpus's transcripts by what the recogniser hears.

So that users can measure what recognition errors cost before deploying on untranscribed audio: the
text stream of such a store is built from recognised words (with the recogniser's word times), exactly
as batch prediction would see them. Recognition is the slow part (≈3× real time on 2 cores), so it is
journalled per utterance in the store (``transcripts.jsonl``) and an interrupted prepare resumes.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from mmfer.corpora.base import Corpus
from mmfer.corpora.text import words_of
from mmfer.features.audio import AudioError, load_audio
from mmfer.speech.align import align
from mmfer.speech.asr import Word

JOURNAL = "transcripts.jsonl"


def transcribe_corpus(c: Corpus, store: Path, rec, language: str | None = None, progress: bool = True
                      ) -> tuple[Corpus, list[tuple[str, str, str]]]:
    """The corpus with ``text``/``words``/word times from recognition (``transcript`` keeps what was typed,
    for WER); utterances whose audio fails or yields no words are returned as errors (stage ``asr``)."""
    path = store / JOURNAL
    done: dict[str, dict] = {}
    if path.is_file():
        with path.open(encoding="utf-8") as fh:
            for line in fh:
                try:
                    r = json.loads(line)
                except json.JSONDecodeError:
                    break
                if r.get("settings") == rec.settings():
                    done[r["utt_id"]] = r
    t = c.table
    todo = [(u, a, s, e) for u, a, s, e in zip(t["utt_id"], t["audio"], t["start"], t["end"]) if u not in done]
    with path.open("a", encoding="utf-8") as fh:
        for u, a, s, e in tqdm(todo, desc=f"recognise ({rec.settings()['model']})", unit="utt", disable=not progress):
            try:
                heard = rec.transcribe(load_audio(a, start=s, end=e), language=language)
                r = {"utt_id": u, "text": heard.text, "words": [[w.word, w.start, w.end] for w in heard.words]}
            except AudioError as err:
                r = {"utt_id": u, "error": err.reason}
            r["settings"] = rec.settings()
            fh.write(json.dumps(r) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
            done[u] = r
    rows, errors = [], []
    for row in t.to_dict("records"):
        r = done[row["utt_id"]]
        tokens = words_of(r.get("text", ""))
        if not tokens:
            errors.append((row["utt_id"], "asr", r.get("error") or "no words recognised"))
            tokens = []
        timed = align(tokens, [Word(w, s, e) for w, s, e in r.get("words", [])], float("inf")) if tokens else []
        rows.append({**row, "text": r.get("text", ""), "words": tokens,
                     "word_start": [w.start for w in timed] or None, "word_end": [w.end for w in timed] or None})
    table = pd.DataFrame(rows, columns=t.columns)
    modalities = c.modalities if "text" in c.modalities else (*c.modalities, "text")
    return dataclasses.replace(c, table=table, modalities=modalities), errors
