"""Frame-level acoustic low-level descriptors (LLDs) with openSMILE, one row per 10 ms frame."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

import numpy as np

from mmfer.features.audio import SAMPLE_RATE, load_audio

FEATURE_SETS = {"compare": ("ComParE_2016", 65), "egemaps": ("eGeMAPSv02", 25)}


class AcousticExtractor:
    """ComParE_2016 LLDs (65 per frame, default) or eGeMAPSv02 LLDs (25) from audio of any format."""

    kind = "acoustic"

    def __init__(self, name: str = "compare"):
        if name not in FEATURE_SETS:
            from mmfer.errors import MmferError

            raise MmferError(f"unknown acoustic feature set {name!r}; choose {' or '.join(FEATURE_SETS)}")
        self.name = name
        self.feature_set, self.dim = FEATURE_SETS[name]

    @cached_property
    def smile(self):
        import opensmile

        return opensmile.Smile(getattr(opensmile.FeatureSet, self.feature_set),
                               opensmile.FeatureLevel.LowLevelDescriptors)

    def settings(self) -> dict:
        import opensmile

        return {"kind": self.kind, "name": self.name, "feature_set": self.feature_set,
                "level": "LowLevelDescriptors", "opensmile": opensmile.__version__, "sample_rate": SAMPLE_RATE,
                "hop_seconds": 0.01, "dim": self.dim, "dtype": "float32"}

    def from_signal(self, x: np.ndarray, sr: int = SAMPLE_RATE) -> np.ndarray:
        frames = self.smile.process_signal(x, sr).to_numpy(dtype=np.float32)
        return np.nan_to_num(frames, nan=0.0, posinf=0.0, neginf=0.0)

    def __call__(self, audio_path: str | Path) -> np.ndarray:
        """[frames, dim] float32; raises AudioError for audio that cannot be used."""
        return self.from_signal(load_audio(audio_path))
