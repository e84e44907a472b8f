"""Cut a long recording into speech segments, streaming: memory is bounded by one block, not the file.

The file is decoded block by block (``soundfile.blocks``), mixed to mono and resampled to 16 kHz; the
Silero VAD that faster-whisper ships (ONNX, no download) finds speech in a buffer of at most one block
plus one unfinished segment. A segment whose end may still lie in the next block is kept back until
that block arrives. Segments are then merged (short neighbours) or split (by the VAD's maximum) so that
each lasts about ``min_seconds``–``max_seconds``, the range of the utterances a model is trained on.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from mmfer.errors import MmferError
from mmfer.features.audio import SAMPLE_RATE, AudioError, audio_header, check_float_range, sound_source

BLOCK_SECONDS = 60.0
TAIL_SECONDS = 1.0  # a segment ending this close to the buffer's end may go on in the next block
MERGE_GAP = 1.0  # seconds of silence across which short segments are joined
VAD_THRESHOLD = 0.5  # Silero's own default
MIN_PAUSE_MS = 500  # a pause this long ends a segment; commas and breaths inside a sentence are shorter


@dataclass
class Segment:
    start: float  # seconds in the file
    end: float
    signal: np.ndarray  # 16 kHz mono float32

    @property
    def duration(self) -> float:
        return self.end - self.start


def stream_blocks(path: str | Path, block_seconds: float = BLOCK_SECONDS) -> Iterator[np.ndarray]:
    """16 kHz mono float32 blocks of about ``block_seconds`` each, in order."""
    info = audio_header(path)
    sr = info.samplerate
    g = np.gcd(sr, SAMPLE_RATE)
    try:
        with sound_source(path) as src:
            yield from _blocks(src, sr, g, info.subtype, block_seconds)
    except (sf.LibsndfileError, RuntimeError) as err:
        raise AudioError(f"unreadable audio ({str(err).splitlines()[0][:120]})") from None


def _blocks(src, sr: int, g: int, subtype: str, block_seconds: float) -> Iterator[np.ndarray]:
    for block in sf.blocks(src, blocksize=int(block_seconds * sr), dtype="float32", always_2d=True):
        check_float_range(block, subtype)
        x = block.mean(axis=1)
        if sr != SAMPLE_RATE:
            x = resample_poly(x, SAMPLE_RATE // g, sr // g).astype(np.float32)
        if not np.isfinite(x).all():
            raise AudioError("audio contains NaN or infinite samples")
        yield x


def _vad(x: np.ndarray, max_seconds: float) -> list[tuple[int, int]]:
    try:
        from faster_whisper.vad import VadOptions, get_speech_timestamps
    except ImportError:
        raise MmferError("segmenting long recordings uses the Silero VAD shipped with faster-whisper: "
                         "pip install 'mmfer[asr]'") from None
    opts = VadOptions(threshold=VAD_THRESHOLD, min_speech_duration_ms=250, max_speech_duration_s=max_seconds,
                      min_silence_duration_ms=MIN_PAUSE_MS, speech_pad_ms=150)
    return [(d["start"], d["end"]) for d in get_speech_timestamps(x, opts, sampling_rate=SAMPLE_RATE)]


def _merge(found: list[tuple[int, int]], min_seconds: float, max_seconds: float) -> list[tuple[int, int]]:
    """Join a too-short segment with a neighbour across a short pause, while the result stays short enough."""
    out: list[tuple[int, int]] = []
    lo, hi, gap = min_seconds * SAMPLE_RATE, max_seconds * SAMPLE_RATE, MERGE_GAP * SAMPLE_RATE
    for s, e in found:
        if out:
            ps, pe = out[-1]
            if ((pe - ps) < lo or (e - s) < lo) and s - pe <= gap and e - ps <= hi:
                out[-1] = (ps, e)
                continue
        out.append((s, e))
    return out


def array_blocks(x: np.ndarray, block_seconds: float) -> Iterator[np.ndarray]:
    """An in-memory 16 kHz signal in blocks, as stream_blocks gives a file's."""
    n = int(block_seconds * SAMPLE_RATE)
    for i in range(0, len(x), n):
        yield np.asarray(x[i:i + n], np.float32)


def segments(path: str | Path | np.ndarray, min_seconds: float = 1.0, max_seconds: float = 15.0,
             block_seconds: float = BLOCK_SECONDS) -> Iterator[Segment]:
    """Speech segments of a recording (a file, or a 16 kHz signal), in order, each about
    ``min_seconds``–``max_seconds`` long.

    A segment (after merging) that ends near the buffer's end might continue, or be joined with what comes
    next: it is kept back and looked at again with the next block, so the buffer never holds more than one
    block plus one segment.
    """
    buffer = np.zeros(0, np.float32)
    offset = 0  # samples of the file before buffer[0]
    size = max(block_seconds, 4 * max_seconds)
    blocks = array_blocks(path, size) if isinstance(path, np.ndarray) else stream_blocks(path, size)
    hold = int((TAIL_SECONDS + MERGE_GAP) * SAMPLE_RATE)
    done = False
    while not done:
        nxt = next(blocks, None)
        done = nxt is None
        if nxt is not None:
            buffer = np.concatenate([buffer, nxt])
        if len(buffer) == 0:
            continue
        limit = len(buffer) if done else len(buffer) - hold
        keep_from = max(limit, 0)
        for s, e in _merge(_vad(buffer, max_seconds), min_seconds, max_seconds):
            if e > limit and not done:
                keep_from = min(keep_from, s)
                break
            yield Segment((offset + s) / SAMPLE_RATE, (offset + e) / SAMPLE_RATE, buffer[s:e].copy())
        buffer, offset = buffer[keep_from:], offset + keep_from
