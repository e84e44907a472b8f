"""The model registry: a name -> which streams it reads and how it fuses them (fairseq's
``register_model`` idea, scaled down to a dict).

The CLI's help, ``mmfer cv --model``, the predictor's choice of model in a folder of runs and the
report read this table; nothing else lists model names.
"""

from __future__ import annotations

from dataclasses import dataclass

from mmfer.errors import MmferError
from mmfer.streams import modalities_of


@dataclass(frozen=True)
class ModelSpec:
    name: str
    streams: tuple[str, ...]   # input streams (see mmfer.streams), in the order their encoders are built
    fusion: str | None         # across modalities (see models.fusion.FUSIONS); None for one modality
    help: str
    family: str = "neural"     # 'neural' (EmotionModel, trained by training.trainer) or 'linear' (baselines)
    preference: int = 50       # lower = preferred by predict/serve when a folder holds several runs

    @property
    def modalities(self) -> tuple[str, ...]:
        return modalities_of(self.streams)


MODELS: dict[str, ModelSpec] = {}


def register_model(name: str, streams: tuple[str, ...], fusion: str | None, help: str, family: str = "neural",
                   preference: int = 50) -> ModelSpec:
    if name in MODELS:
        raise ValueError(f"model {name!r} is registered twice")
    spec = ModelSpec(name, tuple(streams), fusion, help, family, preference)
    if fusion is None and len(spec.modalities) != 1 and family == "neural":
        raise ValueError(f"model {name!r} reads several modalities and needs a fusion")
    MODELS[name] = spec
    return spec


def get_model(name: str) -> ModelSpec:
    if name not in MODELS:
        raise MmferError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    return MODELS[name]


def kinds_of(name: str) -> tuple[str, ...]:
    return get_model(name).streams


def preference_order(modalities: tuple[str, ...] | set[str]) -> list[str]:
    """Models usable with these input modalities, most preferred first (predict/serve pick the first)."""
    usable = [s for s in MODELS.values() if set(s.modalities) <= set(modalities)]
    return [s.name for s in sorted(usable, key=lambda s: (s.preference, list(MODELS).index(s.name)))]


def help_text() -> str:
    return "; ".join(f"{s.name}: {s.help}" for s in MODELS.values()) + "."


register_model("audio", ("acoustic", "functionals", "pooled"), None,
               "frame focus (BLSTM + attention over the acoustic frames) joined with the closed-form class scores "
               "of the openSMILE functionals and of the pooled encoder statistics, weighed on validation",
               preference=40)
register_model("text", ("lexical", "sentence", "context"), None,
               "word focus (BLSTM + attention over the words) joined with the utterance vector's closed-form scores "
               "and the preceding utterances' context vector", preference=45)
FUSED = ("acoustic", "functionals", "pooled", "lexical", "sentence", "context")
register_model("mmmf", FUSED, "gmu", "audio and text encoders fused by a Gated Multimodal Unit", preference=10)
register_model("concat", FUSED, "concat", "fusion baseline: concatenation", preference=20)
register_model("late", FUSED, "late",
               "fusion baseline: averaged logits", preference=30)
register_model("audio-frames", ("acoustic",), None, "ablation: the acoustic frames only (BLSTM + attention)",
               preference=42)
register_model("text-words", ("lexical",), None, "ablation: the utterance's words only, no context", preference=47)
register_model("audio-svm", ("functionals",), None,
               "baseline: speaker-normalised functionals + linear classifier (C chosen on validation speakers)",
               family="linear", preference=60)
register_model("audio-whisper-linear", ("pooled",), None,
               "baseline: the Whisper encoder's pooled frame statistics + linear classifier (C chosen on validation "
               "speakers)", family="linear", preference=62)
register_model("text-tfidf", ("ngrams",), None,
               "baseline: TF-IDF word 1-2-grams + logistic regression (C chosen on validation speakers)",
               family="linear", preference=65)
