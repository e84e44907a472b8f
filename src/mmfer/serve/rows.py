"""What batch prediction writes: one row per unit, journalled (``OUT.partial.jsonl``) one input at a
time so an interrupted run resumes, and the output file (CSV, Parquet or JSON Lines by its suffix) written
atomically at the end; the checks that keep an output from destroying what it points at (locks, plot
targets, writability, earlier outputs recognised by their columns)."""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mmfer.errors import MmferError
from mmfer.serve.inputs import Item

OUTPUT_FORMATS = {".csv": "csv", ".parquet": "parquet", ".jsonl": "jsonl", ".json": "jsonl"}


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


def row_of(item: Item, start: float | None, end: float | None, columns: dict | None = None,
           error: str | None = None) -> dict:
    """The one shape of an output row: which input and which part of it, then a prediction's columns
    (``BatchPredictor._columns``) or the error."""
    return {"key": item.key, "file": item.file, "speaker": item.speaker or "",
            "start": None if start is None else round(start, 3), "end": None if end is None else round(end, 3),
            **(columns if columns is not None else {"error": error})}


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
