"""Cut a long recording into speech segments, streaming: memory is bounded by one block, not the file.

The file is decoded block by block (``soundfile.blocks``), mixed to mono and resampled to 16 kHz (with
the filter's context across block edges: the same samples as resampling the whole file); the
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
    try:
        with sound_source(path) as src:
            yield from _blocks(src, info.samplerate, info.subtype, block_seconds)
    except (sf.LibsndfileError, RuntimeError) as err:
        raise AudioError(f"unreadable audio ({str(err).splitlines()[0][:120]})") from None


def _blocks(src, sr: int, subtype: str, block_seconds: float) -> Iterator[np.ndarray]:
    resampler = BlockResampler(sr) if sr != SAMPLE_RATE else None
    down = resampler.down if resampler else 1
    size = max(down, int(block_seconds * sr) // down * down)  # whole resampling steps: the output stays aligned
    for block in sf.blocks(src, blocksize=size, dtype="float32", always_2d=True):
        check_float_range(block, subtype)
        x = block.mean(axis=1)
        if not np.isfinite(x).all():
            raise AudioError("audio contains NaN or infinite samples")
        y = resampler.push(x) if resampler else x
        if len(y):
            yield y
    rest = resampler.flush() if resampler else None
    if rest is not None and len(rest):
        yield rest


class BlockResampler:
    """``resample_poly`` to 16 kHz of a signal that arrives in blocks, equal to resampling it whole: each
    block is filtered with the input around it (the filter's reach on both sides), so no block edge is
    filtered against zeros. Memory: one block plus twice the reach."""

    def __init__(self, sr: int):
        g = np.gcd(sr, SAMPLE_RATE)
        self.up, self.down = SAMPLE_RATE // g, sr // g
        reach = 10 * max(self.up, self.down) // self.up + 2  # resample_poly's filter half-length, input samples
        self.pad = -(-reach // self.down) * self.down  # rounded up to whole steps
        self.buf = np.zeros(0, np.float32)  # input not yet emitted, after ``left`` samples of context
        self.left = 0

    def _out(self, x: np.ndarray, left: int, keep_in: int | None) -> np.ndarray:
        y = resample_poly(x, self.up, self.down)
        first = left * self.up // self.down
        n = len(y) - first if keep_in is None else keep_in * self.up // self.down
        return y[first:first + n].astype(np.float32)

    def push(self, x: np.ndarray) -> np.ndarray:
        """The 16 kHz samples that ``x`` completes (those whose filter reach has arrived)."""
        self.buf = np.concatenate([self.buf, np.asarray(x, np.float32)])
        ready = (len(self.buf) - self.left - self.pad) // self.down * self.down  # input samples to emit
        if ready <= 0:
            return np.zeros(0, np.float32)
        y = self._out(self.buf, self.left, ready)
        cut = self.left + ready - self.pad  # keep ``pad`` samples before the next start as its context
        self.buf, self.left = self.buf[cut:], self.pad
        return y

    def flush(self) -> np.ndarray:
        """The rest, at the end of the signal (filtered against zeros there, as the whole signal would be)."""
        y = self._out(self.buf, self.left, None) if len(self.buf) > self.left else np.zeros(0, np.float32)
        self.buf = np.zeros(0, np.float32)
        return y


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
