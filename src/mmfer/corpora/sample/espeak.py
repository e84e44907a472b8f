"""eSpeak NG through ctypes, from the ``espeakng-loader`` wheel (library + data, no apt package).

eSpeak NG is GPL-3.0-or-later: it is only ever loaded here, when a sample corpus is synthesised.
The engine keeps global state, so one process-wide :class:`Espeak` serialises every call and keeps its
C callback referenced for as long as the library may call it.
"""

from __future__ import annotations

import ctypes
import threading
from dataclasses import dataclass

import numpy as np

from mmfer.errors import MmferError

AUDIO_OUTPUT_SYNCHRONOUS = 2
POS_CHARACTER = 1
CHARS_UTF8 = 1
EVENT_LIST_TERMINATED = 0
EVENT_WORD = 1
PARAM = {"rate": 1, "volume": 2, "pitch": 3, "range": 4, "wordgap": 7}


class _Event(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint), ("text_position", ctypes.c_int),
        ("length", ctypes.c_int), ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p), ("id", ctypes.c_char * 8),
    ]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


@dataclass
class Prosody:
    """eSpeak parameters: rate (words/min), pitch and range (0-100), volume (0-200), word gap (10 ms)."""

    rate: int = 165
    pitch: int = 50
    range: int = 50
    volume: int = 100
    wordgap: int = 0


@dataclass
class Speech:
    samples: np.ndarray          # int16 at ``sample_rate``
    sample_rate: int
    word_starts: list[tuple[int, float]]  # (0-based character offset in the text, seconds)


class Espeak:
    _instance: Espeak | None = None
    _lock = threading.Lock()

    def __init__(self) -> None:
        try:
            import espeakng_loader
        except ImportError:
            raise MmferError(
                "the sample corpus is synthesised with eSpeak NG from the 'espeakng-loader' wheel, which is "
                "not installed: run  pip install 'mmfer[sample]'  (or  pip install espeakng-loader)"
            ) from None
        try:
            self.lib = ctypes.CDLL(espeakng_loader.get_library_path())
            data = espeakng_loader.get_data_path()
        except (OSError, RuntimeError) as err:
            raise MmferError(f"eSpeak NG could not be loaded from espeakng-loader ({err}); reinstall it with "
                             "pip install --force-reinstall espeakng-loader") from None
        lib = self.lib
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                     ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        # The compiled-in data path is wrong for the wheel: pass its own data folder explicitly.
        self.sample_rate = lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, data.encode(), 0)
        if self.sample_rate <= 0:
            raise MmferError(f"eSpeak NG failed to initialise with data at {data}")
        self._chunks: list[np.ndarray] = []
        self._events: list[tuple[int, int]] = []
        self._callback = _CALLBACK(self._collect)  # referenced for the engine's lifetime
        lib.espeak_SetSynthCallback(self._callback)

    @classmethod
    def get(cls) -> Espeak:
        with cls._lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def seed(self, seed: int) -> None:
        """Seed the engine's noise generator. The engine also keeps wave state from one utterance to the
        next, so output is reproducible only for the same sequence of calls in a fresh process."""
        with self._lock:
            self.lib.espeak_ng_SetRandSeed(seed)

    def _collect(self, wav, n, events) -> int:
        if n > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        i = 0
        while events[i].type != EVENT_LIST_TERMINATED:
            if events[i].type == EVENT_WORD:
                self._events.append((events[i].text_position, events[i].audio_position))
            i += 1
        return 0

    def synth(self, text: str, voice: str, prosody: Prosody) -> Speech:
        with self._lock:
            if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
                raise MmferError(f"eSpeak NG has no voice {voice!r}")
            for name, code in PARAM.items():
                self.lib.espeak_SetParameter(code, int(getattr(prosody, name)), 0)
            self._chunks, self._events = [], []
            data = text.encode("utf-8")
            self.lib.espeak_Synth(data, len(data) + 1, 0, POS_CHARACTER, 0, CHARS_UTF8, None, None)
            self.lib.espeak_Synchronize()
            samples = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
            # text_position is 1-based; WORD events' length stops at apostrophes, so only the start is used.
            starts = [(pos - 1, ms / 1000.0) for pos, ms in self._events]
            return Speech(samples.astype(np.int16), self.sample_rate, starts)
