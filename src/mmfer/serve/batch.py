"""Batch prediction: files, folders or a manifest in; one row per utterance or speech segment out.

Each input becomes one or more *units*: a short file is one utterance (as in training); a long recording
is cut into speech segments (speech.segment, streamed); a manifest row may name a segment of a file by
``start``/``end``. A unit gets its transcript from the manifest (typed) or from the recogniser, its
dialogue context from the units before it (the same recording, or the same ``dialogue`` in a
manifest), and per-speaker normalisation from the manifest's ``speaker`` column when that speaker has
enough recordings.

Rows go to a journal (``OUT.partial.jsonl``) one input at a time, so an interrupted run resumes where it
stopped; the output file (CSV, Parquet or JSON Lines by extension) is written atomically at the end. A
file that cannot be read is a row with its error, not a crash.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path

from mmfer.errors import MmferError, NoSpeech
from mmfer.features.audio import SAMPLE_RATE, AudioError, load_audio
from mmfer.serve.inputs import MAX_UTTERANCE, Item, Unit, is_short, units_of
from mmfer.serve.rows import earlier_context, output_lock, resume, row_of

CONTEXT_KEEP = 10  # preceding transcripts kept per conversation (the model uses at most its own k)


READ_AHEAD = 8  # short inputs whose audio features are being computed ahead


PREDICT_BATCH = 16  # short inputs predicted together (text encoder and fold models batched)


READ_AHEAD_MIN = 8  # fewer inputs than this: the workers' start would cost more than they save


def _audio_features(settings: dict[str, dict], item: Item, max_utterance: float):
    """In a read-ahead worker: (unit, {stream: raw features}) of a short input, or None (long recording,
    unreadable: the main process meets it again and reports it)."""
    from mmfer.features.extractors import extract_audio

    try:
        if not is_short(item, max_utterance):
            return None
        (unit,) = units_of(item, max_utterance, 1.0, 15.0)
        return unit, extract_audio(unit.signal, SAMPLE_RATE, settings)
    except Exception:  # noqa: BLE001
        return None


class ReadAhead:
    """Audio features of the next few short inputs, computed in worker processes while the main process
    runs the text encoder and the models: the features (openSMILE, an SSL encoder) are most of the cost of
    typed-transcript prediction, and this puts every core to work on them."""

    def __init__(self, batch: BatchPredictor, items: list[Item]):
        self.batch, self.items = batch, items
        self.pool = None
        self._pool = None
        self.futures: dict[int, Future] = {}
        self.settings: dict[str, dict] = {}

    def __enter__(self) -> ReadAhead:
        if (self.batch.read_ahead and self.batch.pred.needs_audio and len(self.items) >= READ_AHEAD_MIN
                and (os.cpu_count() or 1) > 1):
            from mmfer.engine import Local

            self.settings = self.batch.pred.audio_settings()
            self._pool = Local.pool(min(2, os.cpu_count() or 1))
            self.pool = self._pool.__enter__()
        return self

    def get(self, k: int):
        if self.pool is None:
            return None
        for j in range(k, min(k + READ_AHEAD, len(self.items))):
            if j not in self.futures:
                self.futures[j] = self.pool.submit(_audio_features, self.settings, self.items[j],
                                                   self.batch.max_utterance)
        fut = self.futures.pop(k)
        try:
            return fut.result()
        except Exception:  # noqa: BLE001 - a worker that died: compute in the main process
            return None

    def __exit__(self, *exc) -> None:
        if self._pool is not None:
            self._pool.__exit__(*exc)


class BatchPredictor:
    """Runs a Predictor (and optionally a recogniser) over items; see the module docstring."""

    def __init__(self, predictor, recogniser=None, language: str | None = None, max_utterance: float = MAX_UTTERANCE,
                 min_seconds: float = 1.0, max_seconds: float = 15.0, read_ahead: bool = True):
        """``read_ahead`` False: no worker processes (a Ray task, which has its own CPU share)."""
        self.pred = predictor
        self.read_ahead = read_ahead
        self.asr = recogniser
        self.language = language
        self.max_utterance = max_utterance
        self.min_seconds, self.max_seconds = min_seconds, max_seconds

    def speaker_stats(self, items: list[Item], progress: bool = True) -> dict[str, dict]:
        """Statistics for each manifest speaker with enough recordings (short files or segments only),
        streamed: one recording is held at a time, only running sums are kept (with a progress bar)."""
        need = self.pred.speaker_min_utterances
        if need is None or not self.pred.needs_audio:
            return {}
        by: dict[str, list[Item]] = {}
        for it in items:
            if it.speaker:
                by.setdefault(it.speaker, []).append(it)
        from tqdm import tqdm

        out = {}
        todo = {spk: its for spk, its in by.items() if len(its) >= need}
        bar = tqdm(total=sum(map(len, todo.values())), desc="speaker statistics", unit="file",
                   disable=not progress or not todo)
        for spk, its in todo.items():
            def signals(its=its):
                for it in its:
                    bar.update(1)
                    try:
                        yield load_audio(it.file, start=it.start, end=it.end, max_seconds=self.max_utterance)
                    except AudioError:
                        continue
            stats = self.pred.speaker_statistics(signals())
            if stats:
                out[spk] = stats
        bar.close()
        return out

    def rows_for(self, item: Item, context: list[str], speaker: dict | None) -> list[dict]:
        """All rows of one input, unit by unit; ``context`` (the conversation so far) is extended in place."""
        rows = []
        language = self.language
        try:
            for unit in units_of(item, self.max_utterance, self.min_seconds, self.max_seconds):
                try:
                    columns = self.predict_unit(unit, context, speaker, language)[0]
                    language = language or columns.get("language") or None  # detected once per recording
                    rows.append(row_of(item, unit.start, unit.end, columns))
                except MmferError as err:
                    rows.append(row_of(item, unit.start, unit.end, error=str(err)))
        except AudioError as err:
            rows.append(row_of(item, item.start, item.end, error=f"cannot read: {err.reason}"))
        return rows or [row_of(item, None, None, error=NoSpeech.NONE_IN_RECORDING)]

    def _transcript(self, unit: Unit, language: str | None):
        """(text, source, recognised words, language) of one unit; raises for silence or no transcript."""
        from mmfer.features.audio import has_speech

        text, source, words, lang = unit.text, "typed" if unit.text else "none", None, None
        if not has_speech(unit.signal):
            raise NoSpeech(NoSpeech.SILENT)
        if self.asr is not None and (self.pred.needs_text or text):
            heard = self.asr.transcribe(unit.signal, language=language)
            lang, words = heard.language, heard.words
            if not text:
                text, source = heard.text, "recognised"
        if self.pred.needs_text and not (text and text.strip()):
            raise MmferError("no transcript: nothing recognised in this segment" if self.asr else
                             f"model '{self.pred.name}' needs the transcript: pass --text (or a manifest's text "
                             "column), or turn recognition on (pip install 'mmfer[asr]', --asr auto)")
        return text, source, words, lang

    def _columns(self, res: dict, text: str | None, source: str, lang: str | None) -> dict:
        """A prediction's output columns (row_of puts them after the input's)."""
        return {"transcript": text or "", "transcript_source": source, "language": lang,
                "emotion": res["emotion"], **{f"p_{c}": round(p, 5) for c, p in res["probabilities"].items()},
                "gate_audio": None if res["gate"] is None else round(res["gate"], 4),
                "normalisation": res["normalisation"] if self.pred.needs_audio else None, "error": None}

    def predict_unit(self, unit: Unit, context: list[str], speaker: dict | None = None,
                     language: str | None = None, audio: dict | None = None) -> tuple[dict, dict]:
        """(the prediction's output columns, the Predictor's full result with transcript and its source)."""
        text, source, words, lang = self._transcript(unit, language)
        res = self.pred.predict(unit.signal, text if self.pred.needs_text else None, context=context[-CONTEXT_KEEP:],
                                speaker=speaker, recognised=words, audio=audio)
        if text:
            context.append(text)
        res.update(transcript=text or "", transcript_source=source, start=unit.start, end=unit.end)
        return self._columns(res, text, source, lang), res

    def run(self, items: list[Item], out: Path | None, progress: bool = True,
            echo: Callable[[str], None] = print, stats: dict[str, dict] | None = None,
            done_before: dict[str, list[str]] | None = None) -> list[dict]:
        """All rows, in input order; with ``out``, journalled and written (resuming an earlier run).
        ``stats``: per-speaker statistics computed already (by a Ray driver), else computed here;
        ``done_before``: for an input, the transcripts of its conversation's inputs done earlier just before
        it (a Ray driver's, from its journal), else read from the journal here.

        Short inputs whose audio features were read ahead are predicted PREDICT_BATCH at a time
        (Predictor.predict_many); long recordings one segment at a time, in order."""
        with output_lock(out):
            return self._run(items, out, progress, echo, stats, done_before)

    def _run(self, items: list[Item], out: Path | None, progress: bool, echo, stats,
             given_before: dict[str, list[str]] | None = None) -> list[dict]:
        from tqdm import tqdm

        from mmfer.serve.predictor import Request

        journal, todo = resume(items, out, echo)
        # speaker statistics and dialogue context come from *all* inputs, so a resumed run predicts exactly
        # what an uninterrupted one would (the done inputs' transcripts are read back from the journal)
        stats = self.speaker_stats(items) if stats is None else stats
        done_before = (earlier_context(items, todo, journal.rows if journal is not None else [])
                       if given_before is None else given_before)
        contexts: dict[str, list[str]] = {}
        rows: list[dict] = []
        pending: list[tuple[Item, Unit, tuple, Request]] = []

        def emit(new: list[dict]) -> None:
            if journal is not None:
                journal.add(new)
            rows.extend(new)

        def flush() -> None:
            outs = self.pred.predict_many([req for *_, req in pending]) if pending else []
            for (it, unit, (text, source, _, lang), _), res in zip(pending, outs):
                emit([row_of(it, unit.start, unit.end, error=str(res)) if isinstance(res, Exception) else
                      row_of(it, unit.start, unit.end, self._columns(res, text, source, lang))])
            pending.clear()

        with ReadAhead(self, todo) as ahead:
            for k, it in enumerate(tqdm(todo, desc="predict", unit="file", disable=not progress)):
                context = contexts.setdefault(it.dialogue, []) if it.dialogue else []
                context.extend(done_before.get(it.key, []))  # inputs done earlier, in order
                speaker = stats.get(it.speaker or "")
                got = ahead.get(k)
                if got is None:  # a long recording, or an input that fails: on its own, in order
                    flush()
                    emit(self.rows_for(it, context, speaker))
                    continue
                unit, audio = got
                try:
                    heard = self._transcript(unit, self.language)
                except MmferError as err:
                    flush()
                    emit([row_of(it, unit.start, unit.end, error=str(err))])
                    continue
                text = heard[0]
                pending.append((it, unit, heard, Request(unit.signal, text if self.pred.needs_text else None,
                                                         list(context[-CONTEXT_KEEP:]), speaker, heard[2], audio)))
                if text:
                    context.append(text)
                if len(pending) >= PREDICT_BATCH:
                    flush()
            flush()
        if journal is None:
            return rows
        journal.finish(self.pred.classes, echo)
        return journal.rows
