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

import contextlib
import csv
import json
import math
import os
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mmfer.errors import MmferError, NoSpeech
from mmfer.features.audio import SAMPLE_RATE, AudioError, load_audio

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".mp3", ".oga", ".opus"}
OUTPUT_FORMATS = {".csv": "csv", ".parquet": "parquet", ".jsonl": "jsonl", ".json": "jsonl"}
MAX_UTTERANCE = 20.0  # seconds: a longer file is a recording to segment, not one utterance
MAX_TIME = 7 * 24 * 3600.0  # a manifest time past a week is not a time in a recording
CONTEXT_KEEP = 10  # preceding transcripts kept per conversation (the model uses at most its own k)


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


READ_AHEAD = 8  # short inputs whose audio features are being computed ahead
PREDICT_BATCH = 16  # short inputs predicted together (text encoder and fold models batched)
READ_AHEAD_MIN = 8  # fewer inputs than this: the workers' start would cost more than they save


def _audio_features(settings: dict[str, dict], item: Item, max_utterance: float):
    """In a read-ahead worker: (unit, {stream: raw features}) of a short input, or None (long recording,
    unreadable: the main process meets it again and reports it)."""
    from mmfer.features.extractors import extract_audio

    try:
        if not _short(item, max_utterance):
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


def _short(item: Item, max_utterance: float) -> bool:
    from mmfer.features.audio import audio_header

    if item.start is not None and item.end is not None:
        return item.end - item.start <= max_utterance
    info = audio_header(item.file)
    return info.frames / info.samplerate <= max_utterance


@dataclass
class Journal:
    """Rows written so far: the output file of an earlier complete run and the journal of this one."""

    out: Path
    rows: list[dict] = field(default_factory=list)

    @property
    def partial(self) -> Path:
        return self.out.with_name(self.out.name + ".partial.jsonl")

    def load(self) -> set[str]:
        if self.out.is_file():
            self.rows += read_rows(self.out)
        if self.partial.is_file():
            with self.partial.open(encoding="utf-8") as fh:
                for line in fh:
                    try:
                        self.rows.append(json.loads(line))
                    except json.JSONDecodeError:
                        break  # a line cut by a crash: that input is done again
        return {r["key"] for r in self.rows}

    def add(self, rows: list[dict]) -> None:
        with self.partial.open("a", encoding="utf-8") as fh:
            for r in rows:
                fh.write(json.dumps(r) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        self.rows += rows

    def finish(self, classes: list[str] | None = None, echo: Callable[[str], None] | None = None) -> None:
        escaped = write_rows(self.rows, self.out, classes)
        self.partial.unlink(missing_ok=True)
        if escaped and echo is not None:
            echo(f"note: {escaped} cell(s) (file names, most likely) are not valid UTF-8 text: written to "
                 f"{self.out.name} with \\xNN escapes for the undecodable bytes")


@contextlib.contextmanager
def output_lock(out: Path | None):
    """One batch run per output at a time (``OUT.lock`` holds the writer's pid, as prepare locks its store)."""
    if out is None:
        yield
        return
    from mmfer.features.store import pid_lock

    output_format(out)
    writable(out, "--out")
    with pid_lock(Path(out).with_name(Path(out).name + ".lock"), f"{out} is being written by another mmfer predict"):
        yield


def resume(items: list[Item], out: Path | None,
           echo: Callable[[str], None] = print) -> tuple[Journal | None, list[Item]]:
    """The journal of ``out`` (None without one) and the inputs it does not hold yet."""
    if out is None:
        return None, list(items)
    output_format(out)
    writable(out, "--out")
    journal = Journal(out)
    done = journal.load()
    todo = [it for it in items if it.key not in done and printable(it.key) not in done]
    if done:
        echo(f"resuming: {len(items) - len(todo)} input(s) already in {out.name}, {len(todo)} to do")
    return journal, todo


PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def check_plot_target(plot: Path, inputs: list[Path], out: Path | None) -> None:
    """``--plot`` may write a new .png file or replace an earlier plot: never an input, the ``--out`` file, a
    folder, a device or any other existing file (checked before the first prediction)."""
    plot = Path(plot).expanduser()
    if plot.suffix.lower() != ".png":
        raise MmferError(f"--plot {plot}: the timeline is a PNG picture: give a file name ending in .png")
    target = plot.resolve()
    if any(target == Path(i).expanduser().resolve() for i in inputs) or (
            out is not None and target == Path(out).expanduser().resolve()):
        raise MmferError(f"--plot {plot}: that is an input or the --out file; choose another name for the picture")
    if plot.exists() or plot.is_symlink():
        if not plot.is_file() or plot.is_symlink():
            raise MmferError(f"--plot {plot}: exists and is not a regular file; choose a new .png name")
        with plot.open("rb") as fh:
            if fh.read(8) != PNG_MAGIC:
                raise MmferError(f"--plot {plot}: exists and is not an earlier plot (not a PNG); nothing was written, "
                                 "choose a new name")
    writable(plot, "--plot")


def writable(path: Path, option: str) -> None:
    """Refuse, before any work, an output whose folder is missing or cannot be written (``io.check_writable``)."""
    from mmfer.io import check_writable

    check_writable(path, option)


def output_format(out: Path) -> str:
    fmt = OUTPUT_FORMATS.get(out.suffix.lower())
    if fmt is None:
        raise MmferError(f"--out {out}: the suffix says the format: {', '.join(OUTPUT_FORMATS)}")
    return fmt


BASE_COLUMNS = ("key", "file", "speaker", "start", "end", "transcript", "transcript_source", "language", "emotion")
TAIL_COLUMNS = ("gate_audio", "normalisation", "error")
MARK = ("key", "file", "start", "end", "emotion", "error")  # an earlier output of mmfer has all of these
FORMULA = ("=", "+", "-", "@", "\t", "\r")  # a spreadsheet would run such a cell as a formula


def columns_of(classes: list[str]) -> list[str]:
    """The output's columns, the same whatever the rows hold (all errors included)."""
    return [*BASE_COLUMNS, *(f"p_{c}" for c in classes), *TAIL_COLUMNS]


def read_rows(path: Path) -> list[dict]:
    """An earlier output's rows to resume from: keys as text (never numbers), CSV formula escapes undone.
    A file without mmfer's columns is refused: it is not ours to rewrite."""
    import pandas as pd

    fmt = output_format(path)
    try:
        if fmt == "csv":
            df = pd.read_csv(path, keep_default_na=False, na_values=[""], dtype={"key": str, "speaker": str})
        elif fmt == "parquet":
            df = pd.read_parquet(path)
        else:
            df = pd.read_json(path, lines=True, dtype={"key": str, "speaker": str})
    except Exception as err:  # noqa: BLE001 - any parser's complaint means the same thing here
        raise MmferError(f"{path}: cannot read the earlier output to resume ({type(err).__name__}); move it away "
                         "or delete it") from None
    if not set(MARK) <= set(df.columns):
        raise MmferError(f"{path}: exists and is not an mmfer prediction output (it lacks the columns "
                         f"{', '.join(c for c in MARK if c not in df.columns)}); nothing was written: choose another "
                         "--out")
    rows = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
            for r in df.to_dict("records")]
    for r in rows:
        r["key"] = str(r["key"])
        if fmt == "csv":
            for k, v in r.items():
                if isinstance(v, str) and v.startswith("'") and v[1:2] and v[1] in FORMULA:
                    r[k] = v[1:]
    return rows


def _escape(v):
    """A CSV cell a spreadsheet would run as a formula gets a leading quote (OWASP's advice)."""
    return "'" + v if isinstance(v, str) and v.startswith(FORMULA) else v


def printable(v):
    """A file name that is not valid UTF-8 (Python keeps its bytes as surrogates) as text every writer
    accepts: the undecodable bytes become ``\\xNN`` escapes. Other values are returned as they are."""
    if isinstance(v, str):
        try:
            v.encode("utf-8")
        except UnicodeEncodeError:
            return v.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return v


def write_rows(rows: list[dict], out: Path, classes: list[str] | None = None) -> int:
    """Atomically, in the format the suffix names, with the full column set (``classes``: the model's);
    returns how many cells had to be escaped as not valid UTF-8 (see :func:`printable`)."""
    import pandas as pd

    from mmfer.io import atomic_path

    escaped = 0

    def safe(r: dict) -> dict:
        nonlocal escaped
        out = {k: printable(v) for k, v in r.items()}
        escaped += sum(out[k] is not r[k] for k in r if isinstance(r[k], str))
        return out

    df = pd.DataFrame([safe(r) for r in rows])
    if classes is not None:
        df = df.reindex(columns=[*columns_of(classes), *(c for c in df.columns if c not in columns_of(classes))])
    fmt = output_format(out)
    with atomic_path(out) as tmp:
        if fmt == "csv":
            df.map(_escape).to_csv(tmp, index=False)
        elif fmt == "parquet":
            df.to_parquet(tmp, index=False)
        else:
            df.to_json(tmp, orient="records", lines=True, force_ascii=False)
    return escaped


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
        base = {"key": item.key, "file": item.file, "speaker": item.speaker or ""}
        rows = []
        language = self.language
        try:
            for unit in units_of(item, self.max_utterance, self.min_seconds, self.max_seconds):
                row = {**base, "start": round(unit.start, 3), "end": round(unit.end, 3)}
                try:
                    row.update(self.predict_unit(unit, context, speaker, language)[0])
                    language = language or row.get("language") or None  # detected once per recording
                except MmferError as err:
                    row["error"] = str(err)
                rows.append(row)
        except AudioError as err:
            rows.append({**base, "start": item.start, "end": item.end, "error": f"cannot read: {err.reason}"})
        return rows or [{**base, "start": None, "end": None, "error": NoSpeech.NONE_IN_RECORDING}]

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

    def _row(self, res: dict, text: str | None, source: str, lang: str | None) -> dict:
        return {"transcript": text or "", "transcript_source": source, "language": lang,
                "emotion": res["emotion"], **{f"p_{c}": round(p, 5) for c, p in res["probabilities"].items()},
                "gate_audio": None if res["gate"] is None else round(res["gate"], 4),
                "normalisation": res["normalisation"] if self.pred.needs_audio else None, "error": None}

    def predict_unit(self, unit: Unit, context: list[str], speaker: dict | None = None,
                     language: str | None = None, audio: dict | None = None) -> tuple[dict, dict]:
        """(output row, the Predictor's full result with transcript and its source) for one unit."""
        text, source, words, lang = self._transcript(unit, language)
        res = self.pred.predict(unit.signal, text if self.pred.needs_text else None, context=context[-CONTEXT_KEEP:],
                                speaker=speaker, recognised=words, audio=audio)
        if text:
            context.append(text)
        res.update(transcript=text or "", transcript_source=source, start=unit.start, end=unit.end)
        return self._row(res, text, source, lang), res

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
                row = {"key": it.key, "file": it.file, "speaker": it.speaker or "", "start": round(unit.start, 3),
                       "end": round(unit.end, 3)}
                row.update({"error": str(res)} if isinstance(res, Exception) else self._row(res, text, source, lang))
                emit([row])
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
                    emit([{"key": it.key, "file": it.file, "speaker": it.speaker or "",
                           "start": round(unit.start, 3), "end": round(unit.end, 3), "error": str(err)}])
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


# ---------------------------------------------------------------- on an executor (Ray)

@dataclass(frozen=True)
class PredictorSpec:
    """What another process needs to build the same BatchPredictor: the model folder and fold, the encoder
    folders the user named, recognition (``asr`` None: off) and segmentation."""

    model_dir: str
    fold: int | None = None
    seed: int | None = None
    lexical: str | None = None
    acoustic: str | None = None
    asr: str | None = None
    language: str | None = None
    max_utterance: float = MAX_UTTERANCE

    def build(self) -> BatchPredictor:
        from mmfer.serve.predictor import Predictor
        from mmfer.speech.asr import recogniser

        pred = Predictor(Path(self.model_dir), fold=self.fold, lexical=self.lexical, acoustic=self.acoustic,
                         seed=self.seed)
        rec = recogniser(self.asr, language=self.language) if self.asr and pred.needs_text else None
        return BatchPredictor(pred, rec, language=self.language, max_utterance=self.max_utterance, read_ahead=False)


_BUILT: dict[PredictorSpec, BatchPredictor] = {}


def earlier_context(items: list[Item], todo: list[Item], done_rows: list[dict]) -> dict[str, list[str]]:
    """For each input still to do: the transcripts of the inputs of its conversation that were done in an
    earlier run and come just before it, so a resumed run sees the context an uninterrupted one would."""
    said: dict[str, list[str]] = {}
    for r in done_rows:
        if r.get("transcript"):
            said.setdefault(r["key"], []).append(r["transcript"])
    waiting = {it.key for it in todo}
    before: dict[str, list[str]] = {}
    buffer: dict[str, list[str]] = {}
    for it in items:
        if not it.dialogue:
            continue
        if it.key in waiting:
            before[it.key] = buffer.pop(it.dialogue, [])
        else:
            buffer.setdefault(it.dialogue, []).extend(said.get(it.key, []))
    return before


def predict_group(spec: PredictorSpec, items: list[Item], stats: dict,
                  done_before: dict[str, list[str]] | None = None) -> list[dict]:
    """An executor's unit of work: the rows of a group of inputs, by a BatchPredictor built once per process
    (``done_before``: the conversation context of inputs done in an earlier run, see earlier_context)."""
    if spec not in _BUILT:
        _BUILT[spec] = spec.build()
    return _BUILT[spec].run(items, None, progress=False, stats=stats, done_before=done_before or {})


def groups_of(items: list[Item]) -> list[list[int]]:
    """Input positions grouped so that a conversation (manifest ``dialogue``) stays in one group, in order."""
    groups: list[list[int]] = []
    where: dict[str, int] = {}
    for i, it in enumerate(items):
        if it.dialogue:
            if it.dialogue not in where:
                where[it.dialogue] = len(groups)
                groups.append([])
            groups[where[it.dialogue]].append(i)
        else:
            groups.append([i])
    return groups


def run_on(executor, batch: BatchPredictor, spec: PredictorSpec, items: list[Item], out: Path | None,
           echo: Callable[[str], None] = print, progress: bool = True) -> list[dict]:
    """BatchPredictor.run with groups of inputs as units of work on ``executor``: the same rows (journalled,
    resumable), in input order. Speaker statistics are computed here, once, for every group."""

    with output_lock(out):
        return _run_on(executor, batch, spec, items, out, echo, progress)


def _run_on(executor, batch: BatchPredictor, spec: PredictorSpec, items: list[Item], out: Path | None, echo,
            progress: bool) -> list[dict]:
    from tqdm import tqdm

    journal, todo = resume(items, out, echo)
    stats = batch.speaker_stats(items, progress)
    before = earlier_context(items, todo, journal.rows if journal is not None else [])
    size = max(1, min(64, -(-len(todo) // (4 * executor.cpus()))))
    chunks: list[list[int]] = []
    for g in groups_of(todo):
        if not chunks or len(chunks[-1]) >= size:
            chunks.append([])
        chunks[-1].extend(g)
    rows: list[dict] = []
    bar = tqdm(total=len(todo), desc="predict", unit="file", disable=not progress)
    jobs = [(spec, [todo[j] for j in c], stats, {todo[j].key: before[todo[j].key] for j in c if todo[j].key in before})
            for c in chunks]
    for i, got in executor.map(predict_group, jobs):
        if journal is not None:
            journal.add(got)
        rows += got
        bar.update(len(chunks[i]))
    bar.close()
    order = {it.key: i for i, it in enumerate(items)}
    if journal is None:
        return sorted(rows, key=lambda r: order.get(r["key"], len(order)))
    journal.rows.sort(key=lambda r: order.get(r["key"], len(order)))
    journal.finish(batch.pred.classes, echo)
    return journal.rows
