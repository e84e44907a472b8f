"""Plot functions. Each returns a matplotlib Figure and draws nothing on screen (Agg backend), so the
report, a notebook and the web demo all call the same code."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

EMOTION_COLORS = {"ang": "#d62728", "hap": "#ffbf00", "neu": "#7f7f7f", "sad": "#1f77b4",
                  "exc": "#ff7f0e", "fru": "#8c564b"}
BOUNDARY_GID = "word-boundary"


def _color(label: str, i: int) -> str:
    return EMOTION_COLORS.get(label, plt.cm.tab10(i % 10))


def confusion_matrix(confusion, classes: list[str], title: str = "") -> Figure:
    """Row-normalised confusion matrix with the counts written in each cell."""
    m = np.asarray(confusion, float)
    norm = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(3.6, 3.2), dpi=110)
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(j, i, f"{norm[i, j]:.2f}\n({int(m[i, j])})", ha="center", va="center", fontsize=7,
                    color="white" if norm[i, j] > 0.6 else "black")
    ax.set_xticks(range(len(classes)), classes)
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def recall_bars(recalls: dict[str, list[float]], classes: list[str]) -> Figure:
    """Per-class recall, one group of bars per class and one bar per model."""
    fig, ax = plt.subplots(figsize=(5.5, 2.8), dpi=110)
    models = list(recalls)
    width = 0.8 / max(len(models), 1)
    x = np.arange(len(classes))
    for k, m in enumerate(models):
        ax.bar(x + (k - (len(models) - 1) / 2) * width, recalls[m], width, label=m)
    ax.set_xticks(x, classes)
    ax.set_ylim(0, 1)
    ax.set_ylabel("recall")
    ax.legend(fontsize=7, ncol=len(models), loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def gate_distribution(gate, true: list[str], correct, classes: list[str]) -> Figure:
    """GMU gate z (acoustic share) per true emotion, and for correct vs wrong predictions."""
    gate = np.asarray(gate, float)
    correct = np.asarray(correct, bool)
    true = np.asarray(true)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(7, 2.8), dpi=110, gridspec_kw={"width_ratios": [len(classes), 2]})
    data = [gate[true == c] for c in classes]
    parts = a1.boxplot(data, tick_labels=classes, patch_artist=True, showfliers=False)
    for i, (patch, c) in enumerate(zip(parts["boxes"], classes)):
        patch.set_facecolor(_color(c, i))
        patch.set_alpha(0.6)
    for i, d in enumerate(data, start=1):
        a1.scatter(np.full(len(d), i) + np.random.default_rng(i).uniform(-0.15, 0.15, len(d)), d, s=4,
                   color="black", alpha=0.4)
    a1.axhline(0.5, color="grey", lw=0.8, ls="--")
    a1.set_ylabel("gate z (acoustic share)")
    a1.set_ylim(0, 1)
    a1.set_title("per true emotion", fontsize=9)
    a2.boxplot([gate[correct], gate[~correct]], tick_labels=["correct", "wrong"], showfliers=False)
    a2.axhline(0.5, color="grey", lw=0.8, ls="--")
    a2.set_ylim(0, 1)
    a2.set_title("by outcome", fontsize=9)
    fig.tight_layout()
    return fig


def frame_attention(signal: np.ndarray | None, sample_rate: int, attention, frame_seconds: float,
                    words: list[str] | None = None, starts=None, ends=None, title: str = "",
                    offset: float = 0.0) -> Figure:
    """Frame attention drawn over the waveform, with forced-alignment word boundaries and the words.

    Attention step i covers [offset + i * frame_seconds, offset + (i + 1) * frame_seconds) (``offset``: where
    the frames start when the extractor left out leading quiet). Word boundaries are vertical lines (gid
    ``word-boundary``) at the alignment's start/end times.
    """
    att = np.asarray(attention, float)
    fig, ax = plt.subplots(figsize=(8, 2.4), dpi=110)
    duration = offset + len(att) * frame_seconds
    if signal is not None and len(signal):
        t = np.arange(len(signal)) / sample_rate
        step = max(1, len(signal) // 4000)
        ax.plot(t[::step], signal[::step] / (np.abs(signal).max() + 1e-9), color="#9aa5b1", lw=0.5)
        duration = max(duration, len(signal) / sample_rate)
    ax.set_ylim(-1.05, 1.05)
    ax.set_yticks([])
    ax2 = ax.twinx()
    edges = offset + np.arange(len(att) + 1) * frame_seconds
    ax2.stairs(att, edges, fill=True, color="#d62728", alpha=0.35)
    ax2.set_ylim(0, max(att.max() * 1.15, 1e-6) if len(att) else 1)
    ax2.set_ylabel("attention", fontsize=8)
    if words is not None and starts is not None and ends is not None:
        for w, s, e in zip(words, starts, ends):
            for x in (s, e):
                ax.axvline(x, color="#1f3b57", lw=0.6, ls=":", gid=BOUNDARY_GID)
            ax.text((s + e) / 2, 0.93, w, ha="center", va="top", fontsize=7, rotation=0, color="#1f3b57")
    ax.set_xlim(0, duration)
    ax.set_xlabel("time (s)")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def word_attention(words: list[str], weights, title: str = "") -> Figure:
    """Heat map of word attention over the transcript, one cell per word."""
    w = np.asarray(weights, float)[: len(words)]
    fig, ax = plt.subplots(figsize=(max(3, 0.55 * len(words) + 1), 1.1), dpi=110)
    # scaled against twice the uniform weight, so near-uniform attention looks flat, not saturated
    vmax = max(w.max(), 2.0 / len(w)) if len(w) else 1.0
    ax.imshow(w[None, :], cmap="Reds", aspect="auto", vmin=0, vmax=vmax)
    ax.set_xticks(range(len(words)), words, fontsize=8, rotation=30, ha="right")
    ax.set_yticks([])
    for i, v in enumerate(w):
        ax.text(i, 0, f"{v:.2f}", ha="center", va="center", fontsize=6)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def probabilities(probs, classes: list[str], title: str = "") -> Figure:
    fig, ax = plt.subplots(figsize=(3, 1.8), dpi=110)
    ax.barh(classes, probs, color=[_color(c, i) for i, c in enumerate(classes)])
    ax.set_xlim(0, 1)
    ax.invert_yaxis()
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def learning_curves(histories: dict[str, list[dict]], title: str = "") -> Figure:
    """Training loss and validation UA per epoch, one line per fold."""
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(7, 2.5), dpi=110)
    for fold, h in histories.items():
        ep = [r["epoch"] for r in h]
        a1.plot(ep, [r["train_loss"] for r in h], label=fold, lw=1)
        a2.plot(ep, [r["val_ua"] for r in h], label=fold, lw=1)
    a1.set_title("training loss", fontsize=9)
    a2.set_title("validation UA", fontsize=9)
    a2.set_ylim(0, 1)
    for a in (a1, a2):
        a.set_xlabel("epoch")
        a.grid(alpha=0.3)
    a2.legend(fontsize=6)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def to_png(fig: Figure) -> bytes:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()
