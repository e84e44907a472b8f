"""Reading audio for feature extraction: any rate, any channel count in; 16 kHz mono float32 out."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from pathlib import Path

import numpy as np
import soundfile as sf

SAMPLE_RATE = 16000
MIN_SECONDS = 0.1  # shorter than a few analysis windows: no usable frame-level descriptors
MIN_RATE, MAX_RATE = 8000, 192000  # what a file may claim; anything else is a broken or hostile header
MAX_SECONDS = 600.0  # one utterance; a long recording is cut into segments, never decoded whole
MAX_CHANNELS = 32
SEGMENT_SLACK = 1.0  # seconds by which a file must outlast a row's start-end to be read as a segment of it
SILENCE_RMS = 10 ** (-60 / 20)  # -60 dBFS: quieter than any speech recording's voiced frames
FLOAT_PEAK = 4.0  # float samples are -1..1; a file whose samples reach past this is scaled wrongly
FLOAT_SUBTYPES = ("FLOAT", "DOUBLE")


def check_float_range(x: np.ndarray, subtype: str) -> None:
    """Float formats carry samples in [-1, 1]; far outside, every feature and the recogniser see garbage."""
    if subtype in FLOAT_SUBTYPES and len(x):
        peak = float(np.nanmax(np.abs(x)))
        if peak > FLOAT_PEAK:
            raise AudioError(f"float samples reach {peak:.3g}, far outside [-1, 1]: the file is scaled wrongly "
                             "(divide its samples by their peak) or damaged")


class AudioError(Exception):
    """This utterance's audio cannot be used; ``reason`` goes to errors.csv."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def segment_of(duration: float, start: float | None, end: float | None) -> tuple[float, float] | None:
    """The part of a file a manifest row means: ``start``/``end`` cut the file when the file reaches
    ``end`` and is clearly longer than the segment (a segment of a long recording); otherwise they are
    times in some other frame (e.g. MELD's times in the episode, with one clip per utterance, whose
    length is about end - start) and the whole file is the utterance."""
    if start is None or end is None or not (np.isfinite(start) and np.isfinite(end)) or end <= start:
        return None
    if start < 0 or end > duration + 0.01 or duration < (end - start) + SEGMENT_SLACK:
        return None
    return float(start), float(min(end, duration))


CHATTY = {".mp3", ".mpeg", ".mpga", ".mp2"}  # libmpg123 writes a line to stderr for each bad frame
_STDERR = threading.Lock()


@contextlib.contextmanager
def decoder_quiet(enabled: bool = True):
    """Send what a C decoder writes to file descriptor 2 to nowhere while it runs: a damaged MP3 makes
    libmpg123 print thousands of "Illegal Audio-MPEG-Header" lines; mmfer says what went wrong itself
    (errors.csv, the row's error). One decode at a time holds the descriptor (a lock)."""
    if not enabled:
        yield
        return
    with _STDERR:
        sys.stderr.flush()
        saved = os.dup(2)
        try:
            with open(os.devnull, "wb") as sink:
                os.dup2(sink.fileno(), 2)
                yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


@contextlib.contextmanager
def sound_source(path: str | Path):
    """What soundfile opens for ``path``: the name, or, for a name that is not valid UTF-8 (libsndfile
    takes UTF-8 names only), the file opened by Python; MP3 decoding runs with its stderr chatter muted."""
    name = str(path)
    with decoder_quiet(Path(name).suffix.lower() in CHATTY):
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            with open(path, "rb") as fh:
                yield fh
            return
        yield name


def audio_header(path: str | Path):
    """The file's header, checked before anything is decoded: memory stays bounded whatever a file claims
    to be (rate 8-192 kHz, 1-32 channels)."""
    path = Path(path)
    if not str(path) or not path.is_file():
        raise AudioError("missing audio file")
    if path.stat().st_size == 0:
        raise AudioError("empty audio file")
    try:
        with sound_source(path) as src:
            info = sf.info(src)
    except (sf.LibsndfileError, RuntimeError, ValueError) as err:
        raise AudioError(f"unreadable audio ({str(err).splitlines()[0][:120]})") from None
    if not MIN_RATE <= info.samplerate <= MAX_RATE:
        raise AudioError(f"implausible sample rate {info.samplerate} Hz in the header (expected "
                         f"{MIN_RATE}-{MAX_RATE} Hz)")
    if not 1 <= info.channels <= MAX_CHANNELS:
        raise AudioError(f"implausible channel count {info.channels} in the header")
    return info


def load_audio(path: str | Path, target_rate: int = SAMPLE_RATE, max_seconds: float | None = MAX_SECONDS,
               start: float | None = None, end: float | None = None) -> np.ndarray:
    """Decode, mix to mono and resample; the header is checked *before* decoding, so memory stays bounded
    whatever a file claims to be (rate 8-192 kHz, at most ``max_seconds`` and MAX_CHANNELS).

    ``start``/``end`` (seconds) read one segment of a long file without decoding the rest (see
    :func:`segment_of`)."""
    path = Path(path)
    info = audio_header(path)
    seconds = info.frames / info.samplerate
    part = segment_of(seconds, start, end)
    first, frames = 0, info.frames
    if part is not None:
        first, last = int(part[0] * info.samplerate), int(round(part[1] * info.samplerate))
        frames, seconds = last - first, (last - first) / info.samplerate
    if max_seconds is not None and seconds > max_seconds:
        raise AudioError(f"audio longer than {max_seconds:g} s ({seconds:.1f} s), the limit for one utterance: "
                         "cut long recordings into utterances first")
    try:
        x = read_mono(path, info, first, frames, target_rate)
    except (sf.LibsndfileError, RuntimeError, ValueError) as err:
        raise AudioError(f"unreadable audio ({str(err).splitlines()[0][:120]})") from None
    return _checked(x, target_rate)


BLOCK_SAMPLES = 2 ** 22  # samples (all channels together) decoded at a time: 16 MB of float32


def read_mono(path: Path, info, first: int, frames: int, target_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Frames ``first`` .. ``first + frames`` of a file as mono float32 at ``target_rate``, decoded block by
    block: each block is mixed to mono and resampled before the next is read, so memory is bounded by the
    result at the target rate (plus one block), not by what the header claims.

    Blocks start at multiples of the resampler's input step and overlap their neighbours by ``pad``
    input frames, so the concatenated output equals resampling the whole signal at once (to rounding)."""
    sr = info.samplerate
    g = np.gcd(sr, target_rate)
    up, down = target_rate // g, sr // g
    step = down if sr != target_rate else 1
    pad = 0 if sr == target_rate else step * max(1, -(-64 * max(up, down) // (up * step)))  # > the filter's reach
    block = max(step, (BLOCK_SAMPLES // max(info.channels, 1)) // step * step)
    out = []
    with sound_source(path) as src, sf.SoundFile(src) as f:
        for s in range(0, frames, block):
            lo, hi = max(0, s - pad), min(frames, s + block + pad)
            f.seek(first + lo)
            x = f.read(hi - lo, dtype="float32", always_2d=True)
            check_float_range(x, info.subtype)
            x = x.mean(axis=1)
            if sr == target_rate:
                out.append(x[s - lo:s - lo + min(block, frames - s)])
                continue
            from scipy.signal import resample_poly  # 1-2 s to import: only where a rate differs

            y = resample_poly(x, up, down).astype(np.float32)
            a = (s - lo) * up // down
            n = -(-min(block, frames - s) * up // down)
            out.append(y[a:a + n])
    x = np.concatenate(out) if out else np.zeros(0, np.float32)
    return x[: -(-frames * up // down)] if sr != target_rate else x


def _mono(x: np.ndarray, sr: int, target_rate: int = SAMPLE_RATE) -> np.ndarray:
    """[samples, channels] at ``sr`` -> mono float32 at ``target_rate``, checked."""
    x = x.mean(axis=1)
    if sr != target_rate:
        from scipy.signal import resample_poly

        g = np.gcd(sr, target_rate)
        x = resample_poly(x, target_rate // g, sr // g).astype(np.float32)
    return _checked(x, target_rate)


def _checked(x: np.ndarray, target_rate: int) -> np.ndarray:
    if len(x) < MIN_SECONDS * target_rate:
        raise AudioError(f"audio too short ({len(x) / target_rate:.3f} s < {MIN_SECONDS} s)")
    if not np.isfinite(x).all():
        raise AudioError("audio contains NaN or infinite samples")
    return x.astype(np.float32, copy=False)


def from_array(x: np.ndarray, sample_rate: int, max_seconds: float | None = MAX_SECONDS) -> np.ndarray:
    """An in-memory signal ([samples] or [samples, channels], any rate in range) as load_audio returns a
    file's: 16 kHz mono float32. Raises MmferError for what a file's header would be refused for."""
    from mmfer.errors import MmferError

    x = np.asarray(x, np.float32)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or not 1 <= x.shape[1] <= MAX_CHANNELS:
        raise MmferError(f"audio array of shape {x.shape}: give [samples] or [samples, channels] (at most "
                         f"{MAX_CHANNELS} channels)")
    if not MIN_RATE <= sample_rate <= MAX_RATE:
        raise MmferError(f"sample rate {sample_rate} Hz: expected {MIN_RATE}-{MAX_RATE} Hz")
    if max_seconds is not None and len(x) / sample_rate > max_seconds:
        raise MmferError(f"audio longer than {max_seconds:g} s ({len(x) / sample_rate:.1f} s)")
    try:
        return _mono(x, sample_rate)
    except AudioError as err:
        raise MmferError(err.reason) from None


def has_speech(x: np.ndarray, sample_rate: int = SAMPLE_RATE, frame_seconds: float = 0.025) -> bool:
    """False for digital silence or near-silence: no 25 ms frame reaches -60 dBFS RMS."""
    n = max(1, int(sample_rate * frame_seconds))
    frames = x[: len(x) // n * n].reshape(-1, n) if len(x) >= n else x[None]
    return bool(len(frames)) and float(np.sqrt((frames.astype(np.float64) ** 2).mean(axis=1)).max()) >= SILENCE_RMS


def speech_span(x: np.ndarray, top_db: float, margin: float = 0.25, step: float = 0.02,
                sample_rate: int = SAMPLE_RATE) -> tuple[int, int]:
    """(start, end) in samples of ``x`` without its leading and trailing quiet: the first and last ``step``
    frame whose RMS is within ``top_db`` dB of the loudest, widened by ``margin`` seconds each side.

    ``start`` is a multiple of ``step`` so that frames computed on the cut keep the whole signal's time grid
    (frame i of the cut starts at ``start / sample_rate + i * step``). ``top_db <= 0`` keeps everything.
    Relative to the loudest frame, so the level of the recording does not matter; a constant noise floor
    within ``top_db`` of the speech keeps everything (nothing is lost, only nothing is saved).
    """
    hop = int(round(step * sample_rate))
    n = len(x) // hop
    if top_db <= 0 or n < 2:
        return 0, len(x)
    power = (x[: n * hop].astype(np.float32, copy=False).reshape(n, hop) ** 2).mean(axis=1, dtype=np.float64)
    loud = np.flatnonzero(power >= power.max() * 10 ** (-top_db / 10))
    pad = int(round(margin / step))
    first, last = max(0, int(loud[0]) - pad), min(n, int(loud[-1]) + 1 + pad)
    return first * hop, (len(x) if last >= n else last * hop)


def frame_offset(settings: dict, signal: np.ndarray | None, sample_rate: int = SAMPLE_RATE) -> float:
    """Seconds from the start of ``signal`` to a frames stream's first frame: 0 unless the extractor left
    out the leading quiet (``trim_db`` in the stream's settings), which :func:`speech_span` finds again."""
    trim = float(settings.get("trim_db") or 0.0)
    if signal is None or trim <= 0:
        return 0.0
    return speech_span(signal, trim, sample_rate=sample_rate)[0] / sample_rate
