"""mmfer as a library: the pipeline's stages as functions, the one layer the command line is built on.

    import mmfer
    store = mmfer.prepare("IEMOCAP_full_release", "store")
    summary = mmfer.cross_validate("store", "mmmf", out="runs/mmmf")
    model = mmfer.load("runs/mmmf")
    model.predict("utterance.wav", text="I can't believe it").emotion
    model.predict_files(["calls/"], out="rows.csv")   # a table indexed by file, start, end
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mmfer.config import FeatureConfig, MmferConfig
from mmfer.engine import executor_for
from mmfer.errors import MmferError, NoSpeech

# ---------------------------------------------------------------- prepare, cross-validate, report

def prepare(corpus: str | Path, out: str | Path, *, features: FeatureConfig | None = None, reader: str | None = None,
            labels: str | None = None, strict: bool = False, progress: bool = True, warn=print,
            allow_outside: bool = False, transcribe=None, language: str | None = None, ray: str | None = None,
            ray_transfer: bool = False, **overrides):
    """Extract the feature store of a corpus (``features.prepare``); returns its PrepareResult (``.store``
    is the store folder).

    ``transcribe``: a recogniser (``speech.asr.recogniser``) whose transcripts replace the corpus's own
    before the text streams are built (what recognition errors cost); a corpus-side step, journalled in
    the store. ``ray``: run the shards as Ray tasks (``--ray``); ``ray_transfer``: workers send the arrays
    back instead of writing them.
    """
    from mmfer.features.prepare import open_corpus, prepare_corpus
    from mmfer.features.store import store_lock

    features = FeatureConfig.model_validate({**(features or FeatureConfig()).model_dump(), **overrides})
    out = Path(out).expanduser().resolve()
    c = open_corpus(corpus, reader, labels, allow_outside, warn)
    out.mkdir(parents=True, exist_ok=True)
    with store_lock(out):
        errors = []
        if transcribe is not None:
            from mmfer.speech.transcribe import transcribe_corpus

            c.require(("audio",), "--transcribe")
            c, errors = transcribe_corpus(c, out, transcribe, language, progress)
        return prepare_corpus(c, out, features, strict, progress, warn,
                              executor_for(ray, features.workers, ray_transfer), errors)


@dataclass
class Summary:
    """A cross-validation run's result: mean ± std over folds of WA, UA, macro-F1 and weighted F1 (as
    fractions), per-fold rows, the pooled confusion matrix, and where the run lies."""

    model: str
    protocol: str
    classes: list[str]
    folds: list[dict]
    wa: dict
    ua: dict
    f1: dict
    wf1: dict
    seconds_per_fold: dict
    confusion: list[list[int]]
    intervals: dict | None = None   # pooled test scores, each with its bootstrap interval (value, low, high)
    seeds: dict | None = None       # with several seeds: the seeds, and mean ± std over them
    path: Path | None = None

    @classmethod
    def from_dict(cls, d: dict, path: Path | None = None) -> Summary:
        optional = {"intervals", "seeds"}
        names = set(cls.__dataclass_fields__) - {"path"} - optional
        return cls(**{k: d[k] for k in names}, **{k: d.get(k) for k in optional}, path=path)

    @classmethod
    def read(cls, run: str | Path) -> Summary:
        from mmfer import runs

        return cls.from_dict(runs.Run(Path(run)).summary, Path(run))

    def table(self) -> str:
        from mmfer.training.cv import table

        return table([self.__dict__])


def cross_validate(store: str | Path, model: str = "mmmf", config: MmferConfig | str | Path | None = None,
                   out: str | Path | None = None, *, folds: list[str] | None = None, progress: bool = True,
                   echo=print, ray: str | None = None) -> Summary:
    """Speaker-independent cross-validation of a registered model over a store (``mmfer cv``)."""
    from mmfer.config import load_config
    from mmfer.training.cv import run_cv

    cfg = config if isinstance(config, MmferConfig) else load_config(config)
    out = Path(out if out is not None else Path("runs") / model).expanduser().resolve()
    summary = run_cv(store, model, cfg, out, progress=progress, echo=echo, only=folds,
                     executor=executor_for(ray) if ray else None)
    return Summary.from_dict(summary, out)


def compare(run_a: str | Path, run_b: str | Path, *, n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> dict:
    """A - B on the same test utterances (``mmfer compare``): paired bootstrap intervals and p-values per
    metric, a sign-flip test over folds, McNemar, per-class recall differences."""
    from mmfer.analysis.compare import compare as compare_runs

    return compare_runs(run_a, run_b, n_boot=n_boot, level=level, seed=seed)


def report(runs: str | Path | list[str | Path], out: str | Path | None = None, store: str | Path | None = None) -> Path:
    """The HTML report of one or several runs (``mmfer report``); returns the page's path."""
    from mmfer.analysis.report import build_report

    paths = [runs] if isinstance(runs, (str, Path)) else list(runs)
    return build_report(paths, out or Path(paths[0]) / "report", store=store)


# ---------------------------------------------------------------- a trained model

@dataclass
class Prediction:
    """One utterance's answer. ``gate``: the fused model's acoustic share (None for one modality);
    ``frames``/``words``: attention over time (seconds per step) and over the words (with their times);
    ``transcript_source``: 'typed', 'recognised' or None (an audio-only model); ``segments``: a long
    recording's predictions, one per speech segment (this object then describes the first)."""

    emotion: str
    probabilities: dict[str, float]
    gate: float | None = None
    frames: dict | None = None
    words: list[dict] | None = None
    transcript: str | None = None
    transcript_source: str | None = None
    language: str | None = None
    start: float = 0.0
    end: float | None = None
    normalisation: str | None = None
    model: str = ""
    folds: int = 0
    segments: list[Prediction] = field(default_factory=list)
    details: dict = field(default_factory=dict, repr=False)  # everything the predictor said (top words, spans...)

    @classmethod
    def from_result(cls, res: dict, language: str | None = None) -> Prediction:
        return cls(emotion=res["emotion"], probabilities=res["probabilities"], gate=res.get("gate"),
                   frames=res.get("frames"), words=res.get("words"), transcript=res.get("transcript") or None,
                   transcript_source=res.get("transcript_source") if res.get("transcript_source") != "none" else None,
                   language=language,
                   start=float(res.get("start") or 0.0), end=res.get("end"), normalisation=res.get("normalisation"),
                   model=res.get("model", ""), folds=res.get("folds", 0), details=res)


class Model:
    """A trained run, a folder of runs or an export, ready to predict (``mmfer.load``)."""

    def __init__(self, path: str | Path, asr: str | None = "auto", acoustic: str | Path | None = None,
                 lexical: str | Path | None = None, fold: int | None = None, language: str | None = None,
                 with_text: bool = True, max_utterance: float = 20.0, seed: int | None = None,
                 whisper_precision: str = "auto"):
        from mmfer.serve.batch import BatchPredictor
        from mmfer.serve.predictor import Predictor, resolve_model_dir
        from mmfer.speech.asr import recogniser

        rec = recogniser(asr, language=language) if asr not in (None, "none") else None
        self.predictor = Predictor(resolve_model_dir(path, with_text=with_text or rec is not None), fold=fold,
                                   lexical=lexical, acoustic=acoustic, seed=seed,
                                   whisper_precision=whisper_precision)
        self.recogniser = rec if self.predictor.needs_text else None
        self.language = language
        self.batch = BatchPredictor(self.predictor, self.recogniser, language=language, max_utterance=max_utterance)
        self.spec = dict(fold=fold, seed=seed, lexical=None if lexical is None else str(lexical),
                         acoustic=None if acoustic is None else str(acoustic),
                         asr=asr if self.recogniser is not None else None, language=language,
                         max_utterance=max_utterance, whisper_precision=whisper_precision)

    @property
    def name(self) -> str:
        return self.predictor.name

    @property
    def classes(self) -> list[str]:
        return self.predictor.classes

    def predict(self, audio, text: str | None = None, context: list[str] | None = None,
                speaker_audio: list | None = None, sample_rate: int | None = None, start: float | None = None,
                end: float | None = None) -> Prediction:
        """One utterance: ``audio`` a file path, or an array with its ``sample_rate`` (any rate, mono or
        [samples, channels]). Without ``text`` the transcript is recognised (when the model reads words and
        a recogniser is on). ``context``: the preceding utterances' transcripts, oldest first;
        ``speaker_audio``: other recordings of the same voice (paths or 16 kHz arrays), for per-speaker
        statistics. A recording longer than the model's utterances comes back with its ``segments``;
        ``start``/``end`` (seconds) name one segment of a file."""
        from mmfer.features.audio import AudioError
        from mmfer.serve.inputs import Item, Unit, units_of

        try:
            speaker = self._speaker(speaker_audio) if speaker_audio else None
        except AudioError as err:
            raise MmferError(f"--speaker-audio: {err.reason}") from None
        history = list(context or [])
        if isinstance(audio, (str, Path)):
            try:
                units = list(units_of(Item(str(audio), str(audio), start=start, end=end), self.batch.max_utterance,
                                      self.batch.min_seconds, self.batch.max_seconds))
            except AudioError as err:
                raise MmferError(f"{audio}: {err.reason}") from None
            if not units:
                raise NoSpeech(f"{audio}: {NoSpeech.NONE_IN_RECORDING}")
        else:
            from mmfer.speech.segment import segments

            signal = to_16k(np.asarray(audio), sample_rate)
            units = [Unit(0.0, len(signal) / 16000, signal)] if len(signal) <= self.batch.max_utterance * 16000 \
                else [Unit(s.start, s.end, s.signal) for s in segments(signal, self.batch.min_seconds,
                                                                       self.batch.max_seconds)]
        if len(units) == 1:
            units[0].text = text
            try:
                row, res = self.batch.predict_unit(units[0], history, speaker, self.language)
            except NoSpeech as err:
                raise NoSpeech(f"{audio}: {err}" if isinstance(audio, (str, Path)) else str(err)) from None
            return Prediction.from_result(res, row.get("language"))
        if text:
            raise MmferError("a transcript cannot be split over a long recording's segments: leave text out (it is "
                             "recognised per segment) or cut the recording into utterances")
        segments = []
        for unit in units:
            try:
                row, res = self.batch.predict_unit(unit, history, speaker, self.language)
            except MmferError:
                continue  # a silent or empty segment
            segments.append(Prediction.from_result(res, row.get("language")))
        if not segments:
            raise NoSpeech(NoSpeech.NONE_IN_RECORDING)
        first = segments[0]
        return Prediction(**{**first.__dict__, "segments": segments})

    def _speaker(self, recordings: list) -> dict:
        from mmfer.features.audio import load_audio

        return self.predictor.speaker_statistics(load_audio(r) if isinstance(r, (str, Path)) else np.asarray(r)
                                                 for r in recordings)

    def predict_files(self, inputs, out: str | Path | None = None, progress: bool = True, allow_outside: bool = False,
                      echo=print, ray: str | None = None):
        """Files, folders (recursively) and CSV manifests: one row per utterance or speech segment, a pandas
        DataFrame indexed by (file, start, end); with ``out`` (.csv, .parquet or .jsonl) journalled, resumable
        and written atomically. A file name that is not valid UTF-8 appears with ``\\xNN`` escapes."""
        import pandas as pd

        from mmfer.serve.inputs import expand_inputs
        from mmfer.serve.remote import PredictorSpec, run_on
        from mmfer.serve.rows import printable

        items = expand_inputs([Path(p) for p in ([inputs] if isinstance(inputs, (str, Path)) else inputs)],
                              allow_outside=allow_outside)
        out = None if out is None else Path(out)
        if ray:
            spec = PredictorSpec(str(self.predictor.path), **self.spec)
            rows = run_on(executor_for(ray), self.batch, spec, items, out, echo=echo, progress=progress)
        else:
            rows = self.batch.run(items, out, progress=progress, echo=echo)
        frame = pd.DataFrame([{k: printable(v) for k, v in r.items()} for r in rows])  # names that are not UTF-8
        return frame.set_index(["file", "start", "end"]) if len(frame) else frame


def to_16k(x: np.ndarray, sample_rate: int | None):
    """An array in any rate and channel layout -> 16 kHz mono float32 (checked like a file)."""
    from mmfer.features.audio import from_array

    if sample_rate is None:
        raise MmferError("an audio array needs its sample_rate (e.g. model.predict(x, sample_rate=16000))")
    return from_array(x, sample_rate)


def load(path: str | Path, asr: str | None = "auto", acoustic: str | Path | None = None,
         lexical: str | Path | None = None, fold: int | None = None, language: str | None = None,
         with_text: bool | None = None, seed: int | None = None, whisper_precision: str = "auto") -> Model:
    """A trained run (``mmfer cv --out``), a folder of runs (the most preferred model is used) or an export
    (``mmfer export``). ``asr``: 'auto' (the bundled Whisper-base when mmfer[asr] is installed), 'none', or a
    local faster-whisper folder; ``acoustic``/``lexical``: the encoder folders a model trained with local
    encoders needs (never taken from the model folder itself); ``fold``: one fold's model instead of the
    ensemble of all folds (and all seeds of a run of several; ``seed``: that seed's models
    only). ``with_text``: from a folder of runs, prefer a model that reads words (default:
    when a recogniser is on; pass True when you will type the transcripts yourself). ``whisper_precision``:
    'auto' runs a model whose Whisper features were made in bfloat16 in float32 on a CPU without native
    bfloat16 (emulated bfloat16 is about 5x slower); 'stored' keeps the training precision everywhere."""
    return Model(path, asr=asr, acoustic=acoustic, lexical=lexical, fold=fold, language=language,
                 with_text=bool(with_text), seed=seed, whisper_precision=whisper_precision)


def config(path: str | Path | None = None, **sections) -> MmferConfig:
    """The configuration of a YAML file (or the defaults), with ``sections`` (``train={"seed": 1}``) on top."""
    from mmfer.config import load_config

    return load_config(path, sections)


__all__ = ["prepare", "cross_validate", "compare", "report", "load", "config", "Model", "Prediction", "Summary",
           "MmferError"]
