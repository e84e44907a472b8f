"""Load a trained run (or an exported model) and predict emotion for one wav + transcript.

The same extractors, settings and normalisation statistics as in training are used (one exception: a
bfloat16 Whisper encoder runs in float32 where bfloat16 would be emulated, ``Predictor.runnable_precision``);
by default the fold models of a cross-validation run form an ensemble (probabilities, attention and gate
averaged).
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mmfer import runs
from mmfer.corpora.text import clean_text, words_of
from mmfer.data import (
    SPEAKER_CLIP,
    Normalizer,
    RunningStats,
    UtteranceSet,
    context_vector,
    prepare_stream,
    sentence_vector,
)
from mmfer.errors import MmferError, NoSpeech
from mmfer.features.audio import SAMPLE_RATE, frame_offset, has_speech
from mmfer.features.extractors import extract_audio, extract_audio_many, extractor_from_settings, pass_key
from mmfer.features.lexical import BUNDLED as BUNDLED_TEXT
from mmfer.models.inference import infer
from mmfer.models.linear import TfidfNgrams
from mmfer.models.registry import get_model
from mmfer.streams import stream

MAX_WORDS = 200  # one utterance; longer text is a document, and its word-attention picture would be unreadable
MAX_CHARACTERS = 2000


def resolve_model_dir(path: str | Path, with_text: bool) -> Path:
    """A run/export folder, or a folder of runs: the preferred model for audio with or without text."""
    return runs.resolve_model_dir(path, ("audio", "text") if with_text else ("audio",))


WHISPER_PRECISIONS = ("auto", "stored")  # how a Predictor runs a bfloat16 Whisper encoder: runnable_precision


@functools.cache
def _bfloat16_runs_here() -> bool:
    """Whether a bfloat16 encoder runs at full speed here: a GPU (which takes float16 anyway) or a CPU with
    native bfloat16."""
    import torch

    from mmfer.features.whisper import native_bfloat16

    return torch.cuda.is_available() or native_bfloat16()


class Predictor:
    def __init__(self, path: str | Path, fold: int | None = None, lexical: str | Path | None = None,
                 acoustic: str | Path | None = None, seed: int | None = None, whisper_precision: str = "auto"):
        """``lexical``/``acoustic``: the text / speech encoder folders the user vouches for. A model folder's
        own record of where its encoders lay is never loaded by itself (it could point anywhere); only the
        bundled MiniLM and openSMILE are. ``whisper_precision``: see :meth:`runnable_precision`."""
        if whisper_precision not in WHISPER_PRECISIONS:
            raise MmferError(f"whisper_precision {whisper_precision!r}: choose 'auto' or 'stored'")
        self.whisper_precision = whisper_precision
        self.path = Path(path).expanduser().resolve()
        self.lexical_source = None if lexical is None else str(Path(str(lexical).removeprefix("hf:")).expanduser()
                                                                .resolve())
        self.acoustic_source = None if acoustic is None else str(Path(str(acoustic).removeprefix("hf:"))
                                                                 .expanduser().resolve())
        self.models, self.ckpts = [], []
        for f in runs.checkpoints(self.path, fold, seed):
            model, ckpt = runs.load_checkpoint(f, self.lexical_source)
            self.models.append(model)
            self.ckpts.append(ckpt)
        first = self.ckpts[0]
        self.name: str = first["model"]
        self.spec = get_model(self.name)
        self.classes: list[str] = first["classes"]
        self.kinds: list[str] = first["kinds"]
        self.features: dict = first["features"]
        self.frame_reduction: int = first["model_config"]["frame_reduction"]
        self.steps = runs.seconds_per_step(self.features, self.frame_reduction)
        self.norms = [{k: Normalizer.from_dict(v) for k, v in c["norms"].items()} for c in self.ckpts]
        self.tfidf = [TfidfNgrams.from_checkpoint(c["ngrams"]) if "ngrams" in c else None for c in self.ckpts]
        # per fold: the closed-form experts that stand in for a voice without its own statistics, where the
        # fold's validation preferred them to the network (training.single)
        self.fallbacks = [c["single_utterance"] if self.per_speaker(f) and c.get("single_utterance", {}).get(
            "uses") == "experts" else None for f, c in enumerate(self.ckpts)]
        self._extractors: dict[str, object] = {}
        self._lock = threading.Lock()  # openSMILE and the engines are not re-entrant
        self._sentences: dict[str, np.ndarray] = {}  # context sentence vectors by text (bounded, see _context)

    @property
    def needs_text(self) -> bool:
        return "text" in self.spec.modalities

    @property
    def needs_audio(self) -> bool:
        return "audio" in self.spec.modalities

    def trusted_settings(self, kind: str) -> dict:
        """The extractor settings of one extracted stream, with every encoder or vectors file replaced by the
        one the user named (``--lexical``/``--acoustic``): a model folder never chooses a file to read. Only
        the bundled encoders (MiniLM, Whisper-base, openSMILE) are used without being named."""
        settings = self.features[kind]
        settings = settings.get("lexical", settings)
        family = settings.get("extractor")
        if family in ("transformer", "static-vectors") and settings.get("name") not in BUNDLED_TEXT:
            if self.lexical_source is None:
                raise MmferError(f"this model's text encoder is a local file or folder ({settings.get('source')}); "
                                 "pass it yourself with --lexical PATH to use it (model folders are not trusted to "
                                 "choose what to load)")
            settings = {**settings, "source": self.lexical_source, "name": Path(self.lexical_source).name}
        local_audio = family == "hf-audio" or (family == "whisper" and settings.get("source") != "bundled")
        if local_audio:
            if self.acoustic_source is None:
                raise MmferError(f"this model's speech encoder is a local folder ({settings.get('source')}); "
                                 "pass it yourself with --acoustic FOLDER (model folders are not trusted to "
                                 "choose what to load)")
            settings = {**settings, "source": self.acoustic_source}
        return self.runnable_precision(settings)

    def runnable_precision(self, settings: dict) -> dict:
        """A Whisper encoder trained in bfloat16 runs in float32 on a CPU without native bfloat16 (and no
        GPU), unless ``whisper_precision='stored'``: torch emulates bfloat16 there, about 5x slower than
        float32 (5.9x against 31.8x real time, one thread, oneDNN held to AVX2), and float32 is what bfloat16
        approximates: on a sample-corpus fold the labels of all 108 test utterances agree, probabilities within
        0.021 (benchmarks/precision_predict.py, results/precision_predict.json)."""
        if (settings.get("extractor") != "whisper" or settings.get("precision") != "bfloat16"
                or self.whisper_precision == "stored" or _bfloat16_runs_here()):
            return settings
        return {**settings, "precision": "float32"}

    def _build(self, settings: dict):
        """The extractor of these (trusted) settings, once per pass."""
        key = pass_key(settings)
        if key not in self._extractors:
            ext = extractor_from_settings(settings)
            if settings.get("extractor") == "hf-audio" and ext.settings()["config_sha1"] != settings["config_sha1"]:
                raise MmferError(f"--acoustic {self.acoustic_source}: not the encoder this model was trained with "
                                 "(its config.json differs)")
            if settings.get("extractor") == "whisper" and ext.settings()["model"] != settings["model"]:
                raise MmferError(f"--acoustic {self.acoustic_source}: not the Whisper this model was trained with")
            self._extractors[key] = ext
        return self._extractors[key]

    def extractor(self, kind: str):
        """The extractor that made this stream's training features, rebuilt from its stored settings."""
        return self._build(self.trusted_settings(kind))

    def audio_kinds(self, speaker_normalised: bool = False) -> list[str]:
        """The extracted audio streams this model reads (only those normalised per speaker, if asked)."""
        return [k for k in self.kinds if not stream(k).derived_from and stream(k).modality == "audio"
                and (stream(k).speaker_normalised or not speaker_normalised)]

    def audio_features(self, signal: np.ndarray, kinds: list[str] | None = None) -> dict[str, np.ndarray]:
        """Every audio stream's raw features of one 16 kHz signal, each extractor pass run once."""
        with self._lock:
            return self._audio_unlocked(signal, kinds)

    def _audio_unlocked(self, signal: np.ndarray, kinds: list[str] | None = None) -> dict[str, np.ndarray]:
        kinds = self.audio_kinds() if kinds is None else kinds
        return extract_audio(signal, SAMPLE_RATE, {k: self.trusted_settings(k) for k in kinds}, self._build)

    def _audio_many_unlocked(self, todo: list[int], requests: list[Request]) -> dict[int, dict[str, np.ndarray]]:
        """The audio features of requests ``todo``, an encoder's passes batched (several utterances per call,
        each as if alone: the Whisper encoder about 1.15x faster for 16 sample-corpus requests on one thread);
        {} when not needed, or when one signal fails (each is then computed alone, so the error is that
        request's own)."""
        if not self.needs_audio or len(todo) < 2:
            return {}
        kinds = self.audio_kinds()
        try:
            got = extract_audio_many([requests[i].signal for i in todo], SAMPLE_RATE,
                                     {k: self.trusted_settings(k) for k in kinds}, self._build)
        except MmferError:
            return {}
        return dict(zip(todo, got))

    def describe(self) -> dict:
        return {"model": self.name, "classes": self.classes, "folds": len(self.models),
                "needs_text": self.needs_text, "needs_audio": self.needs_audio, "path": str(self.path)}

    @property
    def speaker_min_utterances(self) -> int | None:
        """How many recordings of a voice give it its own statistics; None: the model was not trained with
        per-speaker normalisation."""
        modes = [c.get("normalise", {}) for c in self.ckpts]
        used = [m for m in modes if m.get("mode") == "speaker"]
        return used[0].get("speaker_min_utterances", 10) if used else None

    def per_speaker(self, fold: int) -> bool:
        """Whether fold model ``fold`` was trained with per-speaker statistics ('auto' resolves per fold)."""
        return self.ckpts[fold].get("normalise", {}).get("mode") == "speaker"

    def speaker_statistics(self, signals) -> dict[str, Normalizer]:
        """Per-speaker statistics from several recordings of one voice (a session, a speaker's files), for
        the streams the model normalises per speaker; empty (training statistics are used) when the model
        was not trained so or there are fewer recordings than it needs. ``signals``: any iterable (one
        signal is held at a time; only its features are kept)."""
        need = self.speaker_min_utterances
        if need is None:
            return {}
        kinds = self.audio_kinds(speaker_normalised=True)
        stats = {k: RunningStats() for k in kinds}
        n = 0
        for x in signals:
            n += 1
            for k, a in self.audio_features(x, kinds).items():
                stats[k].add(a)
        return {k: s.normalizer(SPEAKER_CLIP) for k, s in stats.items()} if n >= need and kinds else {}

    def _context(self, texts: list[str] | None) -> np.ndarray:
        """The ``context`` input from the preceding transcripts (oldest first), as in training. In a
        conversation each transcript is context for the next few: its vector is computed once."""
        settings = self.features["context"]
        enc = self.extractor("lexical")
        sentences = []
        for t in (texts or [])[-settings["before"]:] if settings["before"] else []:
            if t not in self._sentences:
                w = words_of(clean_text(t))
                if len(self._sentences) > 1000:
                    self._sentences.clear()
                self._sentences[t] = sentence_vector(enc.extract(w)) if w else None
            if self._sentences[t] is not None:
                sentences.append(self._sentences[t])
        return context_vector(sentences, settings["dim"])

    def audio_settings(self) -> dict[str, dict]:
        """The extracted audio streams' extractor settings (encoder folders as the user vouched for them):
        enough to rebuild the extractors in another process (batch prediction's read-ahead workers)."""
        return {k: self.trusted_settings(k) for k in self.audio_kinds()}

    def predict(self, signal: np.ndarray | None, text: str | None = None, top: int = 3,
                context: list[str] | None = None, speaker: dict[str, Normalizer] | None = None,
                recognised: list | None = None, audio: dict[str, np.ndarray] | None = None) -> dict:
        """``signal``: 16 kHz mono float32 (see features.audio.load_audio). ``context``: the preceding
        utterances' transcripts of the same conversation, oldest first. ``speaker``: statistics from
        :meth:`speaker_statistics`; without them training statistics are used. ``recognised``: a
        recogniser's timed words for this signal (speech.asr.Word): the transcript's words are aligned to
        them for word times; without them times are spread by word length and marked approximate.
        ``audio``: this signal's audio stream features, computed ahead (see serve.batch)."""
        (res,) = self.predict_many([Request(signal, text, context, speaker, recognised, audio)], top)
        if isinstance(res, Exception):
            raise res
        return res

    def _check(self, r: Request) -> list[str]:
        """The request's words; raises MmferError for input the model cannot use."""
        if self.needs_text and not (r.text and r.text.strip()):
            raise MmferError(f"model '{self.name}' needs the transcript (--text / the transcript field)")
        if self.needs_audio and r.signal is None:
            raise MmferError(f"model '{self.name}' needs audio")
        if self.needs_audio and not has_speech(r.signal):
            raise NoSpeech(NoSpeech.SILENT)
        if r.text is not None and (len(r.text) > MAX_CHARACTERS or len(r.text.split()) > MAX_WORDS):
            raise MmferError(f"the transcript is too long ({len(r.text.split())} words, {len(r.text)} characters; "
                             f"the limit is {MAX_WORDS} words / {MAX_CHARACTERS} characters per utterance)")
        words = words_of(clean_text(r.text)) if self.needs_text else []
        if self.needs_text and not words:
            raise MmferError("the transcript has no words")
        if r.audio is not None and any(len(a) == 0 for a in r.audio.values()):
            raise MmferError("audio too short: no acoustic frames")
        return words

    def predict_many(self, requests: list[Request], top: int = 3) -> list[dict | MmferError]:
        """Several utterances at once (batch prediction): the text encoder and every fold model see them
        in batches, which is most of the speed-up over one call each. One result or error per request."""
        results: list[dict | MmferError] = [None] * len(requests)  # type: ignore[list-item]
        ok, words = [], {}
        for i, r in enumerate(requests):
            try:
                words[i] = self._check(r)
                ok.append(i)
            except MmferError as err:
                results[i] = err
        if not ok:
            return results
        with self._lock:
            raw: dict[int, dict[str, np.ndarray]] = {i: {} for i in ok}
            if "lexical" in self.kinds or "sentence" in self.kinds:
                for i, vecs in zip(ok, self.extractor("lexical").encode([words[i] for i in ok])):
                    raw[i]["lexical"] = vecs
            computed = self._audio_many_unlocked([i for i in ok if requests[i].audio is None], requests)
            for i in list(ok):
                r = requests[i]
                try:
                    for k in self.kinds:
                        if k == "context":
                            raw[i][k] = self._context(r.context)
                        elif k == "sentence":
                            raw[i][k] = sentence_vector(raw[i]["lexical"])[None]
                    if self.needs_audio:
                        audio = r.audio if r.audio is not None else computed.get(i) or self._audio_unlocked(r.signal)
                        if any(len(a) == 0 for a in audio.values()):
                            raise MmferError("audio too short: no acoustic frames")
                        raw[i].update(audio)
                except MmferError as err:
                    results[i] = err
                    ok.remove(i)
            outs = []
            for f, (model, norms, tfidf) in enumerate(zip(self.models, self.norms, self.tfidf)):
                arrays: dict[str, list[np.ndarray]] = {k: [] for k in self.kinds}
                for i in ok:
                    speaker = (requests[i].speaker or {}) if self.per_speaker(f) else {}
                    for k in self.kinds:
                        a = tfidf.transform([words[i]]).toarray() if k == "ngrams" else raw[i][k]
                        norm = speaker.get(k) or norms.get(k) or Normalizer.identity(a.shape[1])
                        arrays[k].append(prepare_stream(k, a, norm, self.frame_reduction))
                out = infer(model, UtteranceSet([str(i) for i in ok], None, arrays, [words[i] for i in ok]))
                if self.fallbacks[f] is not None:  # voices without their own statistics: the experts decide
                    rows = [j for j, i in enumerate(ok) if not requests[i].speaker]
                    out["fallback"] = dict(zip(rows, expert_probs(self.fallbacks[f], arrays, rows)))
                outs.append(out)
        for j, i in enumerate(ok):
            results[i] = self._result(requests[i], words[i], [fold_row(o, j) for o in outs], top)
        return results

    def _result(self, r: Request, words: list[str], outs: list[dict], top: int) -> dict:
        """One utterance's answer from its fold models' outputs (averaged: the ensemble)."""
        p = np.mean([o["probs"] for o in outs], axis=0)
        gates = [float(o["gate"]) for o in outs if not np.isnan(o["gate"])]
        att = {k: np.mean([o["attention"][k] for o in outs], axis=0) for k in outs[0]["attention"]}
        experts = sum(bool(o.get("experts")) for o in outs)
        result: dict = {
            "emotion": self.classes[int(p.argmax())],
            "probabilities": {c: float(v) for c, v in zip(self.classes, p)},
            "model": self.name, "folds": len(self.models),
            "gate": float(np.mean(gates)) if gates else None,
            "modality_weights": {"audio": float(np.mean(gates)), "text": 1 - float(np.mean(gates))} if gates else None,
            "normalisation": "speaker's own statistics" if r.speaker and any(
                self.per_speaker(f) for f in range(len(self.models))) else "training statistics" + (
                f" (closed-form experts in {experts} of {len(outs)} fold model(s): no statistics of this voice; "
                "the attention shown is the network's)"
                if experts else ""),
            "context_utterances": len(r.context or []) if "context" in self.kinds else None,
        }
        result["duration"] = None if r.signal is None else len(r.signal) / SAMPLE_RATE
        for k, a in att.items():
            if stream(k).modality == "text":
                w_att = a[: len(words)]
                times = word_times(r.signal, words, r.recognised)
                result["words"] = [{"word": w, "attention": float(x), "start": s, "end": e, "timing": how}
                                   for w, x, (s, e, how) in zip(words, w_att, times)]
                result["top_words"] = [d["word"] for d in sorted(result["words"], key=lambda d: -d["attention"])[:top]]
            elif k in self.steps:
                offset = frame_offset(self.features[k], r.signal)
                result["frames"] = {"seconds_per_step": self.steps[k], "offset_seconds": offset,
                                    "attention": [float(x) for x in a]}
                result["top_spans"] = top_spans(a, self.steps[k], top, offset=offset)
        return result


def fold_row(out: dict, j: int) -> dict:
    """Row ``j`` of one fold model's outputs; where its experts stood in, their probabilities and no gate
    (the network's attention is still shown: where it looked, said so in the result's normalisation)."""
    row = {"probs": out["probs"][j], "gate": out["gate"][j],
           "attention": {k: v[j] for k, v in out["attention"].items()}}
    if j in out.get("fallback", {}):
        row.update(probs=out["fallback"][j], gate=np.nan, experts=True)
    return row


def expert_probs(fallback: dict, arrays: dict[str, list[np.ndarray]], rows: list[int]) -> list[np.ndarray]:
    """Class probabilities of the fallback's weighted closed-form experts (training.single) for the prepared
    (training-normalised) inputs of ``rows``."""
    if not rows:
        return []
    logits = 0.0
    for k, e in fallback["experts"].items():
        x = np.concatenate([arrays[k][j] for j in rows]).astype(np.float64)
        logits = logits + e["weight"] * (x @ e["coef"].double().numpy().T + e["icpt"].double().numpy())
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    return list((z / z.sum(axis=1, keepdims=True)).astype(np.float32))


@dataclass
class Request:
    """One utterance to predict (see Predictor.predict for the fields)."""

    signal: np.ndarray | None
    text: str | None = None
    context: list[str] | None = None
    speaker: dict | None = None
    recognised: list | None = None
    audio: dict[str, np.ndarray] | None = None


def top_spans(att: np.ndarray, step: float, n: int, width: float = 0.3, offset: float = 0.0) -> list[dict]:
    """The n most-attended, non-overlapping windows of ``width`` seconds (times from the signal's start: the
    first step starts at ``offset``)."""
    k = max(1, int(round(width / step)))
    sums = np.convolve(att, np.ones(k), mode="valid") if len(att) >= k else np.array([att.sum()])
    spans, used = [], np.zeros(len(sums), bool)
    for i in np.argsort(-sums):
        if used[max(0, i - k + 1): i + k].any():
            continue
        used[i] = True
        spans.append({"start": round(offset + i * step, 3), "end": round(offset + (i + k) * step, 3),
                      "attention": float(sums[i])})
        if len(spans) == n:
            break
    return sorted(spans, key=lambda s: -s["attention"])


def word_times(signal: np.ndarray | None, words: list[str], recognised: list | None
               ) -> list[tuple[float | None, float | None, str]]:
    """(start, end, how) per word: aligned to recognised words when there are some, else approximate."""
    if signal is None:
        return [(None, None, "none")] * len(words)
    if recognised:
        from mmfer.speech.align import align

        return [(w.start, w.end, w.timing) for w in align(words, recognised, len(signal) / SAMPLE_RATE)]
    return [(s, e, "approximate") for s, e in approximate_word_times(signal, words)]


ENERGY_STEP = 10 / 1000  # seconds per energy frame when placing words without alignment


def approximate_word_times(signal: np.ndarray, words: list[str]) -> list[tuple[float, float]]:
    """Without forced alignment: spread the words over the voiced part in proportion to their length.

    Good enough to label the attention picture; marked approximate wherever it is shown.
    """
    hop = int(SAMPLE_RATE * ENERGY_STEP)
    n = len(signal) // hop
    if n == 0 or not words:
        return [(0.0, 0.0)] * len(words)
    energy = np.sqrt((signal[: n * hop].reshape(n, hop) ** 2).mean(axis=1))
    loud = np.flatnonzero(energy > 0.1 * energy.max())
    a, b = (loud[0], loud[-1] + 1) if len(loud) else (0, n)
    weights = np.array([len(w) + 1 for w in words], float)
    edges = a + np.concatenate([[0], np.cumsum(weights)]) / weights.sum() * (b - a)
    return [(round(edges[i] * ENERGY_STEP, 3), round(edges[i + 1] * ENERGY_STEP, 3)) for i in range(len(words))]
