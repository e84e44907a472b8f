"""openSMILE extractors: frame-level low-level descriptors (one row per 10 ms frame) and utterance-level
functionals (one vector per utterance), from audio of any format."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

import numpy as np

from mmfer.errors import MmferError
from mmfer.features.audio import SAMPLE_RATE, load_audio
from mmfer.features.base import register_extractor
from mmfer.features.smile_fork import ForkedSmile

# config name -> (openSMILE feature set, LLDs per frame, functionals per utterance)
FEATURE_SETS = {"compare": ("ComParE_2016", 65, 6373), "egemaps": ("eGeMAPSv02", 25, 88)}
HOP_SECONDS = 0.01  # openSMILE's LLD frame step for both feature sets


class _OpenSmile:
    family = ""
    stream = ""
    input = "audio"
    level = ""
    hop_seconds: float | None = None

    def __init__(self, name: str = "compare"):
        if name not in FEATURE_SETS:
            raise MmferError(f"unknown acoustic feature set {name!r}; choose {' or '.join(FEATURE_SETS)}")
        self.name = name
        self.feature_set = FEATURE_SETS[name][0]
        self.dim = FEATURE_SETS[name][2 if self.hop_seconds is None else 1]

    @classmethod
    def from_settings(cls, settings: dict):
        return cls(settings["name"])

    @classmethod
    def from_config(cls, features):
        # with an SSL encoder for the frames (acoustic 'hf:PATH'), functionals stay ComParE's
        return cls(features.acoustic if features.acoustic in FEATURE_SETS else "compare")

    @cached_property
    def smile(self):
        import opensmile

        return opensmile.Smile(getattr(opensmile.FeatureSet, self.feature_set),
                               getattr(opensmile.FeatureLevel, self.level))

    @cached_property
    def forked(self) -> ForkedSmile:
        """openSMILE's graph built once and forked per signal (``smile_fork``: the same values, faster)."""
        return ForkedSmile(self.smile, SAMPLE_RATE)

    def settings(self) -> dict:
        import opensmile

        return {"kind": self.stream, "extractor": self.family, "name": self.name, "feature_set": self.feature_set,
                "level": self.level, "opensmile": opensmile.__version__, "sample_rate": SAMPLE_RATE,
                "hop_seconds": self.hop_seconds, "dim": self.dim, "dtype": "float32"}

    def extract(self, x: np.ndarray, sr: int = SAMPLE_RATE) -> np.ndarray:
        """[rows, dim] float32; non-finite values (openSMILE's on silence) become 0."""
        rows = self.forked.process(x) if sr == SAMPLE_RATE else None
        if rows is None or len(rows) == 0:  # no server here, or nothing came out: openSMILE's own call says why
            rows = self.smile.process_signal(x, sr).to_numpy(dtype=np.float32)
        return np.nan_to_num(rows, nan=0.0, posinf=0.0, neginf=0.0)

    def __call__(self, audio_path: str | Path, start: float | None = None, end: float | None = None) -> np.ndarray:
        """Raises AudioError for audio that cannot be used. ``start``/``end``: see audio.segment_of."""
        return self.extract(load_audio(audio_path, start=start, end=end))


@register_extractor
class AcousticExtractor(_OpenSmile):
    """ComParE_2016 LLDs (65 per frame; the seed's method) or eGeMAPSv02 LLDs (25). Values reach ~7e6:
    float32."""

    family = "opensmile-lld"
    stream = "acoustic"
    level = "LowLevelDescriptors"
    hop_seconds = HOP_SECONDS

    @staticmethod
    def accepts(features) -> bool:
        return features.acoustic in FEATURE_SETS


@register_extractor
class FunctionalsExtractor(_OpenSmile):
    """ComParE_2016 functionals (6,373 per utterance) or eGeMAPSv02 functionals (88): the 'global' view
    of the voice that the strong linear baselines use."""

    family = "opensmile-functionals"
    stream = "functionals"
    level = "Functionals"
    hop_seconds = None
