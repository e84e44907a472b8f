"""Reading audio for feature extraction: any rate, any channel count in; 16 kHz mono float32 out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

SAMPLE_RATE = 16000
MIN_SECONDS = 0.1  # shorter than a few analysis windows: no usable frame-level descriptors


class AudioError(Exception):
    """This utterance's audio cannot be used; ``reason`` goes to errors.csv."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def load_audio(path: str | Path, target_rate: int = SAMPLE_RATE) -> np.ndarray:
    path = Path(path)
    if not str(path) or not path.is_file():
        raise AudioError("missing audio file")
    if path.stat().st_size == 0:
        raise AudioError("empty audio file")
    try:
        x, sr = sf.read(path, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, ValueError) as err:
        raise AudioError(f"unreadable audio ({str(err).splitlines()[0][:120]})") from None
    x = x.mean(axis=1)
    if sr != target_rate:
        g = np.gcd(sr, target_rate)
        x = resample_poly(x, target_rate // g, sr // g).astype(np.float32)
    if len(x) < MIN_SECONDS * target_rate:
        raise AudioError(f"audio too short ({len(x) / target_rate:.3f} s < {MIN_SECONDS} s)")
    if not np.isfinite(x).all():
        raise AudioError("audio contains NaN or infinite samples")
    return x
