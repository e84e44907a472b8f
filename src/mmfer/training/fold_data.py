"""One fold's data: its utterances, normalisation statistics and batches, and the closed-form experts.

Normalisation (``features.normalise``) of the streams normalised per speaker: ``speaker`` (each speaker's
own statistics), ``corpus`` (the training part's) or ``auto`` (default). Per-speaker statistics assume that
a speaker shows several emotions: they remove the voice, and with it the emotion of a speaker who shows
only one (harvested clips, call-centre agents, talk-show guests). ``auto`` lets the fold's validation
speakers decide: the closed-form experts (a linear model on each vector stream, or on the frames' mean when
a model has none) are fitted under both views, and the view whose experts score higher on validation is
used for the whole model (ties: per speaker). The experts of the chosen view are kept, so they are fitted
once. Validation is a few speakers, so before asking it ``auto`` reads the training labels: when the
training speakers' emotion mix is far from the training part's (``features.label_mix_max``, a mean
total-variation distance), per-speaker statistics are known to carry emotion and the training statistics
are used without a vote (on RAVDESS with two emotions per actor, two of six folds' validation actors, 32
utterances, voted for per-speaker statistics by two utterances: one of those folds lost 21 UA points on its
test actors, the other nothing).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from mmfer.config import MmferConfig
from mmfer.data import Normalizer, StreamNorm, UtteranceSet, attach_derived, fit_normalizers, fold_nbytes
from mmfer.errors import MmferError
from mmfer.features.store import FeatureStore
from mmfer.models.registry import get_model
from mmfer.streams import stream
from mmfer.training.closed_form import ExpertFit, combine, fit_expert, side_by_side
from mmfer.training.folds import Fold

VIEWS = ("speaker", "corpus")


@dataclass
class FoldData:
    """One fold's utterances (those with every stream the model reads), normalisers and sets."""

    train_ids: list[str]
    val_ids: list[str]
    test_ids: list[str]
    norms: dict[str, StreamNorm]
    sets: dict[str, UtteranceSet]
    dims: dict[str, int]
    normalise: str = "speaker"  # the view used ('auto' resolved)
    experts: dict[str, ExpertFit] = field(default_factory=dict)  # fitted already (while choosing the view)
    views: dict[str, float] = field(default_factory=dict)  # 'auto': each asked view's validation score
    # 'auto' chose 'speaker': the training-statistics view's experts, kept for one-utterance prediction
    # (training.single)
    corpus_experts: dict[str, ExpertFit] = field(default_factory=dict)
    label_mix: float | None = None  # 'auto': the training speakers' label-mix distance (label_mix_distance)

    def speakers(self, store: FeatureStore, part: str = "train") -> np.ndarray:
        return np.array([store.speaker_of[u] for u in getattr(self, f"{part}_ids")])


def balanced_loss(cfg: MmferConfig) -> bool:
    """Class weights serve UA, not weighted F1."""
    return cfg.train.class_weighted and cfg.train.objective == "ua"


def fold_data(store: FeatureStore, fold: Fold, model_name: str, cfg: MmferConfig, classes: list[str],
              kinds: list[str] | None = None) -> FoldData:
    spec = get_model(model_name)
    kinds = list(kinds if kinds is not None else spec.streams)
    store.corpus.require(spec.modalities, f"model '{model_name}'")
    fc = cfg.features
    attach_derived(store, kinds, fc.context_before, fc.context_after)
    usable = set(store.usable_ids(kinds))
    ids = [[u for u in part if u in usable] for part in (fold.train, fold.val, fold.test)]
    label_of = dict(zip(store.corpus.table["utt_id"], store.corpus.table["label"]))
    check_classes(fold, [[label_of[u] for u in part] for part in ids], classes)
    index = {c: i for i, c in enumerate(classes)}
    ys = [np.array([index[label_of[u]] for u in part], np.int64) for part in ids[:2]]
    mode, experts, views, corpus_experts, mix = fc.normalise, {}, {}, {}, None
    if mode == "auto":
        mode, experts, views, corpus_experts, mix = choose_view(store, ids, ys, kinds, classes, cfg)
    # statistics: training part, or each speaker's own (label-free); never test labels
    norms = fit_normalizers(store, ids[0], kinds, mode, fc.speaker_min_utterances)
    # held in memory unless the fold outgrows the budget: then read batch by batch from the memory map
    budget = cfg.train.memory_budget_gb * 1e9
    in_memory = fold_nbytes(store, ids[0] + ids[1] + ids[2], kinds, cfg.model.frame_reduction) <= budget
    sets = {name: UtteranceSet.from_store(store, part, classes, kinds, norms, cfg.model.frame_reduction, in_memory)
            for name, part in zip(("train", "val", "test"), ids)}
    return FoldData(*ids, norms, sets, {k: store.features[k].dim for k in kinds}, mode, experts, views,
                    corpus_experts if mode == "speaker" else {}, mix)


def check_classes(fold: Fold, labels: list, classes: list[str]) -> None:
    """Refuse a training part with fewer than two classes; warn when validation or test lacks a class."""
    train = set(labels[0])
    if len(train) < 2:
        raise MmferError(f"fold {fold.name}: the training part has {len(train)} class(es) "
                         f"({', '.join(sorted(train)) or 'none'}); a classifier needs at least two")
    for name, part in zip(("validation", "test"), labels[1:]):
        missing = sorted(set(classes) - set(part))
        if missing and len(part):
            warnings.warn(f"fold {fold.name}: the {name} part has no {', '.join(missing)}; UA averages over "
                          "the classes present", stacklevel=3)


def expert_streams(kinds: list[str], cfg: MmferConfig) -> list[str]:
    """The vector streams of a model that get a closed-form expert."""
    return [k for k in kinds if stream(k).closed_form and not stream(k).sequence and cfg.model.functionals == "linear"]


def choose_view(store: FeatureStore, ids: list[list[str]], ys: list[np.ndarray], kinds: list[str],
                classes: list[str], cfg: MmferConfig
                ) -> tuple[str, dict[str, ExpertFit], dict[str, float], dict[str, ExpertFit], float | None]:
    """'auto' normalisation: the view whose closed-form experts score higher on the validation speakers;
    (view, that view's experts of the model's closed-form streams, each asked view's score, the corpus view's
    experts of those streams, the training speakers' label-mix distance)."""
    normalised = [k for k in kinds if stream(k).speaker_normalised and stream(k).modality == "audio"]
    experts = [k for k in expert_streams(kinds, cfg) if k in normalised]
    deciders = experts or normalised
    if not deciders:
        return "speaker", {}, {}, {}, None
    balanced, n = balanced_loss(cfg), len(classes)
    mix = label_mix_distance([store.speaker_of[u] for u in ids[0]], ys[0], n)
    views = VIEWS if mix <= cfg.features.label_mix_max else ("corpus",)
    inputs = {}
    for view in views:
        norms = fit_normalizers(store, ids[0], deciders, view, cfg.features.speaker_min_utterances)
        inputs.update({(view, k): [stream_vectors(store, k, part, norms[k]) for part in ids[:2]] for k in deciders})
    done = parallel_fits(inputs, ys, n, balanced, cfg.train.objective)
    fits = {view: {k: done[(view, k)] for k in deciders} for view in views}
    ranks = {view: combine([f.val_logits for f in fits[view].values()], ys[1], n, cfg.train.objective)[1]
             for view in views}
    view = max(views, key=lambda v: (ranks[v], v == "speaker"))
    return (view, {k: f for k, f in fits[view].items() if k in experts}, {v: r[0] for v, r in ranks.items()},
            {k: f for k, f in fits["corpus"].items() if k in experts}, round(mix, 4))


def label_mix_distance(speakers: list[str], labels: np.ndarray, n_classes: int) -> float:
    """How far the training speakers' emotion mix is from the training part's: the total-variation distance
    between each speaker's label distribution and the whole part's, averaged over utterances (0: every
    speaker shows the emotions in the corpus's proportions; near 1: each shows one). Per-speaker
    statistics assume a small one: subtracting a speaker's mean then removes the voice, not the emotion."""
    labels = np.asarray(labels)
    if not len(labels):
        return 0.0
    whole = np.bincount(labels, minlength=n_classes) / len(labels)
    speakers = np.asarray(speakers)
    total = 0.0
    for s in np.unique(speakers):
        mine = labels[speakers == s]
        own = np.bincount(mine, minlength=n_classes) / len(mine)
        total += len(mine) * 0.5 * float(np.abs(own - whole).sum())
    return total / len(labels)


def parallel_fits(inputs: dict, ys: list[np.ndarray], n: int, balanced: bool, objective: str) -> dict:
    """The experts of both views and every stream, fitted side by side (``closed_form.side_by_side``)."""
    keys = list(inputs)
    fits = side_by_side(lambda key: fit_expert(inputs[key][0], ys[0], inputs[key][1], ys[1], n, balanced,
                                               objective), keys)
    return dict(zip(keys, fits))


def stream_vectors(store: FeatureStore, kind: str, ids: list[str], norm: StreamNorm) -> np.ndarray:
    """[n, dim]: each utterance's normalised vector (a sequence stream: the mean of its normalised frames,
    clipped as its frames would be)."""
    speaker_of = store.speaker_of
    fs = store.features[kind]
    rows = []
    for u in ids:
        z: Normalizer = norm.for_speaker(speaker_of[u])
        rows.append(z(fs.get(u)).mean(axis=0))
    return np.asarray(rows, np.float32).reshape(len(ids), fs.dim)
