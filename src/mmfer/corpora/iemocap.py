"""Reader for IEMOCAP_full_release exactly as the release lays it out (no third-party CSV).

The release's formats and quirks handled here: tab-separated evaluation blocks
with categorical ``C-`` vote lines, transcription lines ``UTT [s-e]: text``, forced-alignment ``.wdseg``
tables in 10 ms frames, Windows line endings and macOS ``._*`` resource forks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from mmfer.corpora.base import ProblemLog, finish, register_reader
from mmfer.corpora.labels import CATEGORY_CODES, LabelPolicy, parse_policy
from mmfer.corpora.schema import Corpus
from mmfer.corpora.text import align_word, clean_text, is_noise_only, words_of
from mmfer.errors import CorpusError

SESSION_DIR = re.compile(r"^Session(\d+)$")
UTT_ID = re.compile(r"^(Ses\d\d)[FM]_(.+)_([FM])(\d{3})$")
TURN = re.compile(
    r"^\[\s*([\d.]+)\s*-\s*([\d.]+)\s*\]\t(\S+)\t(\S+)\t\[\s*([-\d.]+),\s*([-\d.]+),\s*([-\d.]+)\s*\]\s*$"
)
TRANSCRIPT = re.compile(r"^(\S+)\s+\[\s*([\d.]+)\s*-\s*([\d.]+)\s*\]:\s?(.*)$")
WDSEG_ROW = re.compile(r"^\s*(\d+)\s+(\d+)\s+(-?\d+)\s+(\S+)\s*$")
FRAME = 0.01  # forced alignment frames are 10 ms


def is_iemocap_root(path: Path) -> bool:
    return path.is_dir() and any(SESSION_DIR.match(p.name) and p.is_dir() for p in path.iterdir())


def _lines(path: Path) -> list[str]:
    """Text lines without line endings (\\r\\n or \\n) and without a BOM; undecodable bytes replaced."""
    text = path.read_bytes().decode("utf-8", errors="replace").lstrip("\ufeff")
    return text.splitlines()


def _visible_txt(folder: Path) -> list[Path]:
    """Top-level .txt files, skipping macOS ``._*`` resource forks and hidden files."""
    return sorted(p for p in folder.glob("*.txt") if p.is_file() and not p.name.startswith("."))


@dataclass
class Turn:
    utt_id: str
    start: float
    end: float
    label: str
    vad: tuple[float, float, float]
    votes: list[str] = field(default_factory=list)


def parse_evaluation(path: Path, log: ProblemLog) -> list[Turn]:
    """Turns of one ``EmoEvaluation/<dialog>.txt`` with their categorical votes."""
    turns: list[Turn] = []
    current: Turn | None = None
    for n, line in enumerate(_lines(path), start=1):
        if not line.strip():
            current = None  # blocks are separated by blank lines
            continue
        if line.startswith("%"):
            continue
        if line.startswith("["):
            m = TURN.match(line)
            if not m:
                log.problem("malformed evaluation line (expected "
                            "'[start - end]<TAB>utterance<TAB>label<TAB>[V, A, D]')", path, n)
                current = None
                continue
            s, e, utt, label, v, a, d = m.groups()
            current = Turn(utt, float(s), float(e), label.strip().lower(), (float(v), float(a), float(d)))
            turns.append(current)
        elif line.startswith("C-") and current is not None:
            _, sep, rest = line.partition(":")
            if not sep:
                log.problem("malformed vote line (expected 'C-<evaluator>: Cat; ...')", path, n)
                continue
            cats = rest.split("(", 1)[0]
            for cat in cats.split(";"):
                cat = cat.strip()
                if cat:
                    current.votes.append(CATEGORY_CODES.get(cat.lower(), cat.lower()))
        # A- (dimensional per-evaluator) lines and anything else inside a block carry nothing we keep.
    return turns


def parse_transcriptions(path: Path, wanted: set[str], log: ProblemLog) -> dict[str, str]:
    """``utt -> raw text`` for annotated utterances; other lines (``M: [LAUGHTER]``, ``..._MXX0``) skip."""
    out: dict[str, str] = {}
    for n, line in enumerate(_lines(path), start=1):
        if not line.strip():
            continue
        m = TRANSCRIPT.match(line)
        if m:
            utt = m.group(1)
            if utt in wanted:
                out[utt] = m.group(4).strip()
            continue
        first = line.split(maxsplit=1)[0]
        if first in wanted:  # an annotated utterance whose line is broken: worth reporting
            log.problem("malformed transcription line (expected 'UTT [start-end]: text')", path, n)
    return out


def parse_wdseg(path: Path) -> tuple[list[str], list[float], list[float]]:
    """Words with start/end seconds from a ``.wdseg`` file; raises CorpusError naming the bad line."""
    words: list[str] = []
    starts: list[float] = []
    ends: list[float] = []
    header_seen = False
    for n, line in enumerate(_lines(path), start=1):
        stripped = line.strip()
        if not stripped:
            continue
        if not header_seen and stripped.split()[:2] == ["SFrm", "EFrm"]:
            header_seen = True
            continue
        if stripped.startswith("Total score"):
            break
        m = WDSEG_ROW.match(line)
        if not m:
            raise CorpusError("malformed alignment row (expected 'SFrm EFrm SegAScr Word')", path, n)
        sf, ef, _, token = m.groups()
        if int(ef) < int(sf):
            raise CorpusError(f"alignment row ends (frame {ef}) before it starts (frame {sf})", path, n)
        word = align_word(token)
        if word is not None:
            words.append(word)
            starts.append(round(int(sf) * FRAME, 4))
            ends.append(round((int(ef) + 1) * FRAME, 4))
    return words, starts, ends


def speaker_of(utt_id: str) -> tuple[str, str]:
    """(speaker, gender): the session plus the gender letter of the id's *last* part."""
    m = UTT_ID.match(utt_id)
    if not m:
        raise ValueError(utt_id)
    return f"{m.group(1)}{m.group(3)}", m.group(3)


def read_iemocap(root: str | Path, labels: str | dict | LabelPolicy | None = "4class",
                 strict: bool = False) -> Corpus:
    """Read every ``SessionN`` under ``root`` into a :class:`Corpus` (nothing under root is written)."""
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise CorpusError("corpus folder not found", root)
    sessions = sorted((p for p in root.iterdir() if SESSION_DIR.match(p.name) and p.is_dir()),
                      key=lambda p: int(SESSION_DIR.match(p.name).group(1)))
    if not sessions:
        raise CorpusError("not an IEMOCAP_full_release folder: no Session1..Session5 inside", root)
    policy = labels if isinstance(labels, LabelPolicy) else parse_policy(labels or "4class")
    log = ProblemLog(strict)
    rows: list[dict] = []
    for sdir in sessions:
        eval_dir = sdir / "dialog" / "EmoEvaluation"
        trans_dir = sdir / "dialog" / "transcriptions"
        for folder in (eval_dir, trans_dir):
            if not folder.is_dir():
                raise CorpusError("missing folder (expected the release layout SessionN/dialog/"
                                  "EmoEvaluation and SessionN/dialog/transcriptions)", folder)
        for eval_file in _visible_txt(eval_dir):
            dialog = eval_file.stem
            turns = parse_evaluation(eval_file, log)
            ids = {t.utt_id for t in turns}
            trans_file = trans_dir / eval_file.name
            if trans_file.is_file():
                texts = parse_transcriptions(trans_file, ids, log)
            else:
                log.problem("transcription file missing for this dialog", trans_file)
                texts = {}
            for t in turns:
                row = _row(sdir, dialog, t, texts.get(t.utt_id), log)
                if row is not None:
                    rows.append(row)
    return finish("iemocap", root, rows, policy, log, ("audio", "text"),
                  {"word_times": True, "dialogues": True, "sessions": True})


def _row(sdir: Path, dialog: str, t: Turn, raw_text: str | None, log: ProblemLog) -> dict | None:
    """One table row, or None (counted in the log's drops) when the utterance cannot be used."""
    try:
        speaker, gender = speaker_of(t.utt_id)
    except ValueError:
        log.problem(f"utterance id {t.utt_id!r} does not look like Ses01F_impro01_M003",
                    sdir / "dialog" / "EmoEvaluation" / f"{dialog}.txt", drop="bad_id")
        return None
    if raw_text is None:
        log.drop("missing_transcript")
        return None
    if is_noise_only(raw_text):
        log.drop("noise_only")
        return None
    text = clean_text(raw_text)
    words, starts, ends = words_of(text), None, None
    wdseg = sdir / "sentences" / "ForcedAlignment" / dialog / f"{t.utt_id}.wdseg"
    if wdseg.is_file():
        try:
            aligned, s, e = parse_wdseg(wdseg)
        except CorpusError as err:
            if log.strict:
                raise
            log.problems.append(f"{err} (utterance kept without word times)")
        else:
            if aligned:
                words, starts, ends = aligned, s, e
    dialog_part = dialog.split("_", 1)[1] if "_" in dialog else dialog
    method = "impro" if "impro" in dialog_part else "script" if "script" in dialog_part else ""
    return {
        "utt_id": t.utt_id, "corpus": "iemocap", "session": t.utt_id[:5], "speaker": speaker,
        "gender": gender, "dialog": dialog, "turn": float("nan"), "split": "", "method": method,
        "start": t.start, "end": t.end,
        "transcript": raw_text, "text": text, "words": words, "word_start": starts, "word_end": ends,
        "label_raw": t.label, "label": None, "votes": t.votes, "valence": t.vad[0],
        "activation": t.vad[1], "dominance": t.vad[2],
        "audio": str(sdir / "sentences" / "wav" / dialog / f"{t.utt_id}.wav"),
    }


class IemocapReader:
    """``--corpus iemocap``: a folder with Session1..Session5 in the release layout."""

    name = "iemocap"

    def detect(self, path: Path) -> bool:
        return Path(path).is_dir() and is_iemocap_root(Path(path))

    def read(self, path: str | Path, labels: str | dict | LabelPolicy | None = None, strict: bool = False,
             allow_outside: bool = False) -> Corpus:
        return read_iemocap(path, labels or "4class", strict=strict)  # paths are the release's own


register_reader(IemocapReader())
