"""Offline speech recognition behind one small contract, with recognisers in a registry.

``recogniser(spec)`` turns what the user named (``--asr``) into an object with
``transcribe(signal) -> Transcript``: the bundled Whisper *base* (default), any local faster-whisper
model folder, or ``none``. Nothing is ever downloaded. The bundled weights are joined once into the cache
(``mmfer.weights``); the same folder gives the default acoustic stream (``features.whisper``).
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mmfer.errors import MmferError
from mmfer.weights import WHISPER, bundled_whisper_dir, whisper_installed

BUNDLED = WHISPER
INSTALL_HINT = ("speech recognition needs the optional extra: pip install 'mmfer[asr]' (faster-whisper, which runs "
                "the bundled Whisper-base weights); or pass typed transcripts, or --asr none")


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


def available() -> bool:
    """True when faster-whisper and the bundled weights are installed."""
    return importlib.util.find_spec("faster_whisper") is not None and whisper_installed()


bundled_model_dir = bundled_whisper_dir  # the recogniser's folder: the bundled weights (mmfer.weights)


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
