"""Train one fold: early stopping on validation UA, then one look at the test speakers."""

from __future__ import annotations

import copy
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from mmfer import runs
from mmfer.config import MmferConfig
from mmfer.data import UtteranceSet, attach_derived, fit_normalizers, fold_nbytes
from mmfer.errors import MmferError
from mmfer.features.store import FeatureStore
from mmfer.models import EmotionModel, build_model, get_model
from mmfer.models.inference import infer, word_input
from mmfer.streams import STREAMS, stream
from mmfer.training import distributed
from mmfer.training.folds import Fold
from mmfer.training.metrics import scores


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def pick_device(pref: str) -> torch.device:
    if pref == "cuda" or (pref == "auto" and torch.cuda.is_available()):
        group = distributed.current()
        return torch.device("cuda", group.local_rank) if group is not None else torch.device("cuda")
    return torch.device("cpu")


def cpu_threads(requested: int) -> int:
    """torch threads: as asked, else the cores shared among the processes on this machine (DDP)."""
    group = distributed.current()
    return requested or max(1, (os.cpu_count() or 1) // (group.local_world if group else 1))


def autocast(device: torch.device, amp: str):
    if device.type != "cuda" or amp == "off":
        return torch.autocast(device.type, enabled=False)
    return torch.autocast("cuda", dtype=torch.float16 if amp == "fp16" else torch.bfloat16)  # auto: bf16


@dataclass
class FoldResult:
    metrics: dict
    predictions: pd.DataFrame


def class_weights(labels: np.ndarray, n: int) -> torch.Tensor:
    counts = np.bincount(labels, minlength=n).astype(float)
    w = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / n, 0.0)
    return torch.tensor(w, dtype=torch.float32)


@dataclass
class FoldData:
    """One fold's utterances (those with every stream the model reads), normalisers and in-memory sets."""

    train_ids: list[str]
    val_ids: list[str]
    test_ids: list[str]
    norms: dict
    sets: dict[str, UtteranceSet]
    dims: dict[str, int]


def fold_data(store: FeatureStore, fold: Fold, model_name: str, cfg: MmferConfig, classes: list[str],
              kinds: list[str] | None = None) -> FoldData:
    spec = get_model(model_name)
    kinds = list(kinds if kinds is not None else spec.streams)
    store.corpus.require(spec.modalities, f"model '{model_name}'")
    fc = cfg.features
    attach_derived(store, kinds, fc.context_before, fc.context_after)
    usable = set(store.usable_ids(kinds))
    ids = [[u for u in part if u in usable] for part in (fold.train, fold.val, fold.test)]
    check_classes(fold, [store.corpus.table.set_index("utt_id").loc[i, "label"] for i in ids], classes)
    # statistics: training part, or each speaker's own (label-free); never test labels
    norms = fit_normalizers(store, ids[0], kinds, fc.normalise, fc.speaker_min_utterances)
    # held in memory unless the fold outgrows the budget: then read batch by batch from the memory map
    budget = cfg.train.memory_budget_gb * 1e9
    in_memory = fold_nbytes(store, ids[0] + ids[1] + ids[2], kinds, cfg.model.frame_reduction) <= budget
    sets = {name: UtteranceSet.from_store(store, part, classes, kinds, norms, cfg.model.frame_reduction, in_memory)
            for name, part in zip(("train", "val", "test"), ids)}
    return FoldData(*ids, norms, sets, {k: store.features[k].dim for k in kinds})


def check_classes(fold: Fold, labels: list, classes: list[str]) -> None:
    """Refuse a training part with fewer than two classes; warn when validation or test lacks a class."""
    import warnings

    train = set(labels[0])
    if len(train) < 2:
        raise MmferError(f"fold {fold.name}: the training part has {len(train)} class(es) "
                         f"({', '.join(sorted(train)) or 'none'}); a classifier needs at least two")
    for name, part in zip(("validation", "test"), labels[1:]):
        missing = sorted(set(classes) - set(part))
        if missing and len(part):
            warnings.warn(f"fold {fold.name}: the {name} part has no {', '.join(missing)}; UA averages over "
                          "the classes present", stacklevel=3)


def finish_fold(store: FeatureStore, fold: Fold, model: nn.Module, cfg: MmferConfig, classes: list[str],
                run_dir: Path, data: FoldData, test: dict, started: float, extra_metrics: dict,
                extra_checkpoint: dict | None = None) -> FoldResult:
    """Score the test part once, write predictions, checkpoint and metrics (metrics last) through runs."""
    labels = data.sets["test"].labels
    pred = test["probs"].argmax(1)
    result = scores(labels, pred, len(classes))
    metrics = {"fold": fold.name, "test": fold.name, "test_speakers": fold.test_speakers,
               "val_speakers": fold.val_speakers, "n_train": len(data.train_ids), "n_val": len(data.val_ids),
               "n_test": len(data.test_ids), **extra_metrics, "classes": classes, **result,
               "seconds": round(time.perf_counter() - started, 3)}
    n = len(data.test_ids)
    columns = {"utt_id": data.test_ids, "fold": fold.name, "true": [classes[i] for i in labels],
               "pred": [classes[i] for i in pred], "probs": [p.tolist() for p in test["probs"]]}
    for s in STREAMS.values():  # every attention column, empty where this model has no such stream
        if s.attention_column:
            att = test["attention"].get(s.name)
            columns[s.attention_column] = [a.tolist() for a in att] if att else [None] * n
    columns["gate"] = test["gate"]
    predictions = pd.DataFrame(columns)
    fc = cfg.features
    features = {k: store.features[k].meta["settings"] for k in data.dims if k in store.features}
    runs.save_checkpoint(runs.fold_dir(run_dir, fold.index) / runs.CHECKPOINT, model, cfg.model, classes, data.dims,
                         {k: n.train for k, n in data.norms.items()}, features,
                         {"normalise": {"mode": fc.normalise, "speaker_min_utterances": fc.speaker_min_utterances},
                          **(extra_checkpoint or {})})
    runs.write_fold(run_dir, fold.index, predictions, metrics)
    return FoldResult(metrics, predictions)


def train_fold(store: FeatureStore, fold: Fold, model_name: str, cfg: MmferConfig, classes: list[str],
               run_dir: Path, progress: bool = True) -> FoldResult:
    started = time.perf_counter()
    if get_model(model_name).family == "linear":
        from mmfer.training.linear import train_linear_fold

        return train_linear_fold(store, fold, model_name, cfg, classes, run_dir, started)
    tc, mc = cfg.train, cfg.model
    seed_everything(tc.seed + fold.index)
    torch.set_num_threads(cpu_threads(tc.threads))
    device = pick_device(tc.device)
    data = fold_data(store, fold, model_name, cfg, classes)
    sets = data.sets
    from mmfer.features.base import stacked_layers

    layers = stacked_layers({k: store.features[k].meta["settings"] for k in data.dims if k in store.features})
    word_model = finetuned_words(store, data, tc, device) if tc.finetune_lexical else None
    model = build_model(model_name, data.dims, len(classes), mc, layers, word_model).to(device)
    if tc.init_from:
        init_encoders(model, tc.init_from, fold.index)
    balanced = tc.class_weighted and tc.objective == "ua"  # class weights serve UA, not weighted F1
    prefit = prefit_linear(model, data, len(classes), balanced, store, tc.objective)
    group = distributed.current()
    net = model
    if group is not None:  # several processes, one model: gradients averaged by DDP
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                      find_unused_parameters=True)
    weights = class_weights(sets["train"].labels, len(classes)) if balanced else None
    loss_fn = nn.CrossEntropyLoss(weight=None if weights is None else weights.to(device))
    opt = torch.optim.AdamW(param_groups(model, tc), lr=tc.lr, weight_decay=tc.weight_decay)
    # fp16 gradients underflow without loss scaling; bf16 and fp32 need none
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and tc.amp == "fp16")
    best = {"ua": -1.0, "loss": float("inf"), "epoch": 0, "state": None}
    history = []
    kept: list[dict] = []  # the best epochs' weights, for the soup
    if prefit:  # the prefitted linear model alone is a candidate too ("epoch 0")
        val = infer(model, sets["val"], device)
        s0 = scores(sets["val"].labels, val["probs"].argmax(1), len(classes))
        best = {"ua": s0[tc.objective], "loss": val["loss"], "epoch": 0, "state": copy.deepcopy(model.state_dict())}
        kept.append(dict(best))
        history.append({"epoch": 0, "train_loss": float("nan"), "val_loss": val["loss"], "val_ua": s0["ua"],
                        "val_wa": s0["wa"], "val_wf1": s0["wf1"]})
    bar = tqdm(range(1, tc.max_epochs + 1), desc=f"{model_name} fold {fold.name}", unit="ep",
               disable=not progress or (group is not None and not group.leader), leave=False)
    for epoch in bar:
        model.train()
        total, count = 0.0, 0
        given_scores(model, True)
        for batch in sets["train"].batches(tc.batch_size, shuffle=True, seed=tc.seed * 1000 + epoch, share=group):
            batch = batch.to(device)
            with autocast(device, tc.amp):
                out = net(batch.inputs, batch.lengths, **word_input(model, batch))
            loss = loss_fn(out["logits"].float(), batch.labels)
            for aux in out.get("aux_logits", {}).values():  # model.aux_weight: each modality alone, too
                loss = loss + mc.aux_weight * loss_fn(aux.float(), batch.labels) / len(out["aux_logits"])
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            nn.utils.clip_grad_norm_(model.parameters(), tc.clip)
            scaler.step(opt)
            scaler.update()
            total += loss.item() * len(batch.ids)
            count += len(batch.ids)
        given_scores(model, False)
        val = infer(model, sets["val"], device)
        val_scores = scores(sets["val"].labels, val["probs"].argmax(1), len(classes))
        history.append({"epoch": epoch, "train_loss": total / max(count, 1), "val_loss": val["loss"],
                        "val_ua": val_scores["ua"], "val_wa": val_scores["wa"], "val_wf1": val_scores["wf1"]})
        bar.set_postfix(loss=f"{total / max(count, 1):.3f}", val_ua=f"{val_scores['ua']:.3f}")
        here = {"ua": val_scores[tc.objective], "loss": val["loss"], "epoch": epoch}
        if tc.soup > 1 and keep(kept, here, tc.soup):
            kept.append({**here, "state": copy.deepcopy(model.state_dict())})
        if epoch_rank(here) > epoch_rank(best):
            best = {**here, "state": kept[-1]["state"] if kept and kept[-1]["epoch"] == epoch
                    else copy.deepcopy(model.state_dict())}
        elif epoch - best["epoch"] >= tc.patience:
            break
    bar.close()
    model.load_state_dict(best["state"])
    souped, soup_score = (greedy_soup(model, kept, best, sets["val"], device, len(classes), tc.objective)
                          if tc.soup > 1 else ([best["epoch"]], best["ua"]))
    if group is not None and not group.leader:  # rank 0 scores the test part and writes the fold
        return FoldResult({}, pd.DataFrame())
    test = infer(model, sets["test"], device)
    return finish_fold(store, fold, model, cfg, classes, run_dir, data, test, started,
                       {"best_epoch": best["epoch"], "soup_epochs": souped, "objective": tc.objective,
                        "val_score": best["ua"], "soup_val_score": soup_score,
                        "history": history, **prefit},
                       {"finetuned_lexical": True} if word_model is not None else None)


def finetuned_words(store: FeatureStore, data: FoldData, tc, device: torch.device) -> nn.Module:
    """train.finetune_lexical: the stored text encoder, to be trained with the model. Every part of the
    fold carries its words into the batches; the fold's training statistics z-score the encoder's output
    as they do the stored vectors."""
    import warnings

    from mmfer.models.tuned import WordTransformer, finetune_source

    if "lexical" not in data.dims:
        raise MmferError("train.finetune_lexical: this model reads no words (no 'lexical' stream)")
    settings = store.features["lexical"].meta["settings"]
    if device.type == "cpu":
        warnings.warn("train.finetune_lexical on CPU is slow (about 14 minutes per IEMOCAP fold for MiniLM on "
                      "2 cores) and did not pay there; it is meant for a GPU", stacklevel=3)
    norm = data.norms["lexical"].train
    words_of = dict(zip(store.corpus.table["utt_id"], store.corpus.table["words"]))
    for part in data.sets.values():
        part.words = [list(words_of[u]) for u in part.ids]
    return WordTransformer(finetune_source(settings, settings.get("source")), settings.get("layers", "last"),
                           mean=norm.mean, std=norm.std)


def param_groups(model: EmotionModel, tc) -> list[dict]:
    """The fine-tuned text encoder learns at ``train.finetune_lr`` (a pretrained transformer forgets at
    the rate that suits a freshly initialised BLSTM); everything else at ``train.lr``."""
    tuned = [p for p in model.word_model.parameters()] if model.word_model is not None else []
    ids = {id(p) for p in tuned}
    rest = [p for p in model.parameters() if id(p) not in ids]
    return [{"params": rest}] + ([{"params": tuned, "lr": tc.finetune_lr}] if tuned else [])


def epoch_rank(epoch: dict) -> tuple[float, float]:
    """How epochs compare on validation: the objective's score, then the lower loss."""
    return epoch["ua"], -epoch["loss"]


def keep(kept: list[dict], here: dict, n: int) -> bool:
    """Whether an epoch is among the ``n`` best so far (then the weakest kept one is dropped)."""
    if len(kept) < n:
        return True
    worst = min(kept, key=epoch_rank)
    if epoch_rank(here) <= epoch_rank(worst):
        return False
    kept.remove(worst)
    return True


def greedy_soup(model: EmotionModel, kept: list[dict], best: dict, val, device, n_classes: int,
                objective: str) -> tuple[list[int], float]:
    """Greedy weight averaging ("model soup", Wortsman et al. 2022) of the best epochs of this run: from
    the best epoch, add the next best while the averaged weights do not score lower on the validation
    part. Epochs of one run lie in one basin, so their average is a flatter, better-generalising point;
    validation decides, so the soup is never worse there than the best epoch alone. Leaves the chosen
    weights in ``model``; returns their epochs and validation score."""
    others = sorted((d for d in kept if d["epoch"] != best["epoch"]), key=epoch_rank, reverse=True)
    chosen, states, score = [best["epoch"]], [best["state"]], epoch_rank(best)
    for cand in others:
        trial = average_states(states + [cand["state"]])
        model.load_state_dict(trial)
        out = infer(model, val, device)
        s = (scores(val.labels, out["probs"].argmax(1), n_classes)[objective], -out["loss"])
        if s >= score:
            chosen, states, score = chosen + [cand["epoch"]], states + [cand["state"]], s
    model.load_state_dict(average_states(states))
    return chosen, score[0]


def average_states(states: list[dict]) -> dict:
    """The element-wise mean of floating-point weights (buffers of other types from the first)."""
    if len(states) == 1:
        return states[0]
    return {k: torch.stack([s[k].float() for s in states]).mean(0).to(v.dtype) if v.is_floating_point() else v
            for k, v in states[0].items()}


def given_scores(model: EmotionModel, on: bool) -> None:
    for enc in model.prefit_encoders().values():
        enc.scores_given = on


def prefit_linear(model: EmotionModel, data: FoldData, n_classes: int, balanced: bool, store: FeatureStore,
                  objective: str = "ua", inner_folds: int = 5) -> dict:
    """Fit each closed-form encoder (LinearExpert) on the training part, C chosen on validation UA, and
    replace the training utterances' inputs by cross-fitted scores (inner speaker-grouped folds)."""
    from mmfer.training.linear import fit_scores, select_linear

    info = {}
    speaker_of = dict(zip(store.corpus.table["utt_id"], store.corpus.table["speaker"]))
    speakers = np.array([speaker_of[u] for u in data.train_ids])
    for k, enc in model.prefit_encoders().items():
        xs = [np.concatenate(data.sets[p].arrays[k]) for p in ("train", "val")]
        ys = [data.sets[p].labels for p in ("train", "val")]
        ua, c, (coef, icpt), _ = select_linear(xs, ys, n_classes, balanced, objective)
        with torch.no_grad():
            enc.linear.weight.copy_(torch.from_numpy(coef))
            enc.linear.bias.copy_(torch.from_numpy(icpt))
        oof = fit_scores(xs[0], ys[0], speakers, c, n_classes, balanced, inner_folds)
        data.sets["train"].arrays[k] = [row[None] for row in oof]
        info[f"{k}_C"], info[f"{k}_val_score"] = c, ua
    if info:
        model.start_from_prefit()
    return info


def init_encoders(model: EmotionModel, init_from: dict[str, str], fold_index: int) -> None:
    """Two-stage recipe: start a fused model's encoders from trained unimodal runs of the same fold."""
    for modality, run_dir in init_from.items():
        kinds = [k for k in model.kinds if stream(k).modality == modality]
        if not kinds:
            raise MmferError(f"init_from: model '{model.name}' has no {modality!r} encoder")
        ckpt = runs.fold_dir(Path(run_dir), fold_index) / runs.CHECKPOINT
        if not ckpt.is_file():
            raise MmferError(f"init_from: {ckpt} not found (train that unimodal run first)")
        state = runs.read_checkpoint(ckpt)["state_dict"]
        for kind in kinds:
            prefix = f"encoders.{kind}."
            sub = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            if not sub:
                raise MmferError(f"init_from: {ckpt} has no {kind!r} encoder")
            model.encoders[kind].load_state_dict(sub)
