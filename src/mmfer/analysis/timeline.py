"""A long recording's timeline: waveform, segments coloured by emotion, probabilities, transcript.

The waveform is drawn from a min/max envelope computed while streaming the file (bounded memory for
hours of audio); segments come from batch prediction rows (serve.batch).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from mmfer.analysis.plots import _color, plt
from mmfer.features.audio import SAMPLE_RATE

BINS = 2000


def envelope(path: str | Path, bins: int = BINS) -> tuple[np.ndarray, np.ndarray, float]:
    """(low, high, seconds): the waveform's min and max in ``bins`` equal slices, streamed."""
    from mmfer.features.audio import audio_header
    from mmfer.speech.segment import stream_blocks

    info = audio_header(path)
    total = max(1, int(info.frames / info.samplerate * SAMPLE_RATE))
    lo, hi = np.zeros(bins, np.float32), np.zeros(bins, np.float32)
    pos = 0
    for block in stream_blocks(path):
        idx = np.minimum((pos + np.arange(len(block))) * bins // total, bins - 1)
        np.minimum.at(lo, idx, block)
        np.maximum.at(hi, idx, block)
        pos += len(block)
    return lo, hi, pos / SAMPLE_RATE


def timeline(path: str | Path, rows: list[dict], classes: list[str], title: str | None = None,
             wrap: int = 38) -> Figure:
    """Three panels sharing the time axis; ``rows``: one recording's prediction rows (start, end, emotion,
    p_<class>, transcript)."""
    lo, hi, seconds = envelope(path)
    ok = sorted((r for r in rows if not r.get("error") and r.get("start") is not None), key=lambda r: r["start"])
    colors = {c: _color(c, i) for i, c in enumerate(classes)}
    fig, (ax_w, ax_p, ax_t) = plt.subplots(3, 1, figsize=(12, 6.5), dpi=100, sharex=True,
                                           gridspec_kw={"height_ratios": [2, 2, 1.4]})
    t = np.linspace(0, seconds, len(lo))
    ax_w.fill_between(t, lo, hi, color="#444444", linewidth=0)
    for r in ok:
        ax_w.axvspan(r["start"], r["end"], color=colors.get(r["emotion"], "#cccccc"), alpha=0.35, linewidth=0)
    ax_w.set_yticks([])
    ax_w.set_ylabel("waveform")
    ax_w.legend(handles=[Patch(color=colors[c], alpha=0.5, label=c) for c in classes], loc="upper right",
                ncol=len(classes), fontsize=8, frameon=False)
    for c in classes:
        xs, ys = [], []
        for r in ok:
            xs += [r["start"], r["end"], np.nan]
            ys += [r.get(f"p_{c}", np.nan)] * 2 + [np.nan]
        ax_p.plot(xs, ys, color=colors[c], linewidth=2.5, label=c)
    ax_p.set_ylim(0, 1)
    ax_p.set_ylabel("probability")
    for k, r in enumerate(ok):
        # three staggered rows: a segment's text may use three times its own width (about 5 px a character)
        room = min(wrap, int(3 * (r["end"] - r["start"]) / max(seconds, 1e-9) * fig.get_figwidth() * fig.dpi / 5))
        text = (r.get("transcript") or "").strip()
        if len(text) > room:
            text = text[: max(room - 1, 0)] + "…" if room >= 4 else ""
        ax_t.text((r["start"] + r["end"]) / 2, 0.8 - 0.3 * (k % 3), text, ha="center", va="center", fontsize=7,
                  color=colors.get(r["emotion"], "black"))
    ax_t.set_ylim(0, 1)
    ax_t.set_yticks([])
    ax_t.set_ylabel("transcript")
    ax_t.set_xlim(0, seconds)
    ax_t.set_xlabel("time (s)")
    errors = sum(1 for r in rows if r.get("error"))
    ax_w.set_title(title or f"{Path(path).name}: {len(ok)} segment(s)" + (f", {errors} failed" if errors else ""),
                   fontsize=10)
    fig.tight_layout()
    return fig
