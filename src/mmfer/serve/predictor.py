"""Load a trained run (or an exported model) and predict emotion for one wav + transcript.

The same extractors, settings and normalisation statistics as in training are used; by default the fold
models of a cross-validation run form an ensemble (probabilities, attention and gate averaged).
"""

from __future__ import annotations

import shutil
import threading
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from mmfer.corpora.text import clean_text, words_of
from mmfer.data import Normalizer, prepare_array
from mmfer.errors import MmferError
from mmfer.features.audio import SAMPLE_RATE
from mmfer.io import read_json, write_json

EXPORT_MARKER = "mmfer-model.json"


def _checkpoints(path: Path, fold: int | None) -> list[Path]:
    if (path / EXPORT_MARKER).is_file():
        files = sorted((path / "models").glob("fold-*.pt"))
    else:
        files = sorted(path.glob("fold-*/model.pt"))
    if fold is not None:
        files = [f for f in files if f.parent.name == f"fold-{fold}" or f.stem == f"fold-{fold}"]
        if not files:
            raise MmferError(f"{path}: no fold {fold}")
    if not files:
        raise MmferError(f"{path} holds no trained model (expected fold-*/model.pt of `mmfer cv`, or an "
                         "`mmfer export` folder)")
    return files


def resolve_model_dir(path: str | Path, with_text: bool) -> Path:
    """A run/export folder, or a folder of runs (quickstart's runs/): pick mmmf with text, audio without."""
    path = Path(path).expanduser().resolve()
    if not path.is_dir():
        raise MmferError(f"model folder not found: {path}")
    if (path / EXPORT_MARKER).is_file() or any(path.glob("fold-*/model.pt")):
        return path
    order = ("mmmf", "concat", "late", "audio", "text") if with_text else ("audio",)
    for name in order:
        if (path / name).is_dir() and any((path / name).glob("fold-*/model.pt")):
            return path / name
    if not with_text and any(p.is_dir() for p in path.iterdir()):
        raise MmferError(f"{path} has no audio-only model: pass the transcript with --text")
    raise MmferError(f"no trained run in {path}")


class Predictor:
    def __init__(self, path: str | Path, fold: int | None = None):
        from mmfer.training.trainer import load_checkpoint

        self.path = Path(path).expanduser().resolve()
        self.models, self.ckpts = [], []
        for f in _checkpoints(self.path, fold):
            model, ckpt = load_checkpoint(f)
            self.models.append(model)
            self.ckpts.append(ckpt)
        first = self.ckpts[0]
        self.name: str = first["model"]
        self.classes: list[str] = first["classes"]
        self.kinds: list[str] = first["kinds"]
        self.features: dict = first["features"]
        self.frame_reduction: int = first["model_config"]["frame_reduction"]
        self.norms = [{k: Normalizer.from_dict(v) for k, v in c["norms"].items()} for c in self.ckpts]
        self._lock = threading.Lock()  # openSMILE and the engines are not re-entrant

    @property
    def needs_text(self) -> bool:
        return "lexical" in self.kinds

    @property
    def needs_audio(self) -> bool:
        return "acoustic" in self.kinds

    @cached_property
    def acoustic(self):
        from mmfer.features.acoustic import AcousticExtractor

        return AcousticExtractor(self.features["acoustic"]["name"])

    @cached_property
    def lexical(self):
        from mmfer.features.lexical import make_encoder

        s = self.features["lexical"]
        if s["name"] == "minilm":
            return make_encoder("minilm")
        return make_encoder(s.get("source", s["name"]))

    def describe(self) -> dict:
        return {"model": self.name, "classes": self.classes, "folds": len(self.models),
                "needs_text": self.needs_text, "needs_audio": self.needs_audio, "path": str(self.path)}

    def predict(self, signal: np.ndarray | None, text: str | None = None, top: int = 3) -> dict:
        """``signal``: 16 kHz mono float32 (see features.audio.load_audio)."""
        if self.needs_text and not (text and text.strip()):
            raise MmferError(f"model '{self.name}' needs the transcript (--text / the transcript field)")
        if self.needs_audio and signal is None:
            raise MmferError(f"model '{self.name}' needs audio")
        with self._lock:
            raw: dict[str, np.ndarray] = {}
            words: list[str] = []
            if self.needs_audio:
                raw["acoustic"] = self.acoustic.from_signal(signal, SAMPLE_RATE)
                if len(raw["acoustic"]) == 0:
                    raise MmferError("audio too short: no acoustic frames")
            if self.needs_text:
                words = words_of(clean_text(text))
                if not words:
                    raise MmferError("the transcript has no words")
                raw["lexical"] = self.lexical.encode([words])[0]
            probs, att, gates = [], {k: [] for k in self.kinds}, []
            with torch.no_grad():
                for model, norms in zip(self.models, self.norms):
                    arrays = {k: prepare_array(raw[k], norms[k], self.frame_reduction if k == "acoustic" else 1)
                              for k in self.kinds}
                    out = model({k: torch.from_numpy(a)[None] for k, a in arrays.items()},
                                {k: torch.tensor([len(a)]) for k, a in arrays.items()})
                    probs.append(torch.softmax(out["logits"], -1)[0].numpy())
                    for k in self.kinds:
                        att[k].append(out["attention"][k][0].mean(0).numpy())
                    if "gate" in out:
                        gates.append(float(out["gate"][0]))
        p = np.mean(probs, axis=0)
        result: dict = {
            "emotion": self.classes[int(p.argmax())],
            "probabilities": {c: float(v) for c, v in zip(self.classes, p)},
            "model": self.name, "folds": len(self.models),
            "gate": float(np.mean(gates)) if gates else None,
            "modality_weights": {"audio": float(np.mean(gates)), "text": 1 - float(np.mean(gates))} if gates else None,
        }
        duration = None if signal is None else len(signal) / SAMPLE_RATE
        result["duration"] = duration
        if "lexical" in self.kinds:
            w_att = np.mean(att["lexical"], axis=0)[: len(words)]
            times = approximate_word_times(signal, words) if signal is not None else [(None, None)] * len(words)
            result["words"] = [{"word": w, "attention": float(a), "start": s, "end": e}
                               for w, a, (s, e) in zip(words, w_att, times)]
            result["top_words"] = [d["word"] for d in sorted(result["words"], key=lambda d: -d["attention"])[:top]]
        if "acoustic" in self.kinds:
            f_att = np.mean(att["acoustic"], axis=0)
            step = 0.01 * self.frame_reduction
            result["frames"] = {"seconds_per_step": step, "attention": [float(a) for a in f_att]}
            result["top_spans"] = top_spans(f_att, step, top)
        return result


def top_spans(att: np.ndarray, step: float, n: int, width: float = 0.3) -> list[dict]:
    """The n most-attended, non-overlapping windows of ``width`` seconds."""
    k = max(1, int(round(width / step)))
    sums = np.convolve(att, np.ones(k), mode="valid") if len(att) >= k else np.array([att.sum()])
    spans, used = [], np.zeros(len(sums), bool)
    for i in np.argsort(-sums):
        if used[max(0, i - k + 1): i + k].any():
            continue
        used[i] = True
        spans.append({"start": round(i * step, 3), "end": round((i + k) * step, 3), "attention": float(sums[i])})
        if len(spans) == n:
            break
    return sorted(spans, key=lambda s: -s["attention"])


def approximate_word_times(signal: np.ndarray, words: list[str]) -> list[tuple[float, float]]:
    """Without forced alignment: spread the words over the voiced part in proportion to their length.

    Good enough to label the attention picture; marked approximate wherever it is shown.
    """
    hop = SAMPLE_RATE // 100
    n = len(signal) // hop
    if n == 0 or not words:
        return [(0.0, 0.0)] * len(words)
    energy = np.sqrt((signal[: n * hop].reshape(n, hop) ** 2).mean(axis=1))
    loud = np.flatnonzero(energy > 0.1 * energy.max())
    a, b = (loud[0], loud[-1] + 1) if len(loud) else (0, n)
    weights = np.array([len(w) + 1 for w in words], float)
    edges = a + np.concatenate([[0], np.cumsum(weights)]) / weights.sum() * (b - a)
    return [(round(edges[i] / 100, 3), round(edges[i + 1] / 100, 3)) for i in range(len(words))]


def export(run: str | Path, out: str | Path) -> Path:
    """Copy a run's fold models into a self-contained folder (weights, config, normalisation, features)."""
    run = Path(run).expanduser().resolve()
    out = Path(out).expanduser().resolve()
    files = _checkpoints(run, None)
    pred = Predictor(run)
    tmp = out.with_name(out.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    (tmp / "models").mkdir(parents=True)
    for f in files:
        name = f.parent.name if f.name == "model.pt" else f.stem
        shutil.copy2(f, tmp / "models" / f"{name}.pt")
    if (run / "config.yaml").is_file():
        shutil.copy2(run / "config.yaml", tmp / "config.yaml")
    write_json(tmp / EXPORT_MARKER, {**pred.describe(), "path": None, "features": pred.features,
                                     "frame_reduction": pred.frame_reduction,
                                     "summary": read_json(run / "summary.json") if (run / "summary.json").is_file()
                                     else None})
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out
