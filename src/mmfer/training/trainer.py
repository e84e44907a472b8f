"""Train one fold of a neural model: closed-form experts first, then epochs with early stopping on the
validation objective, the epoch soup, and one look at the test speakers.

The pieces it calls live beside it: ``fold_data`` (utterances, normalisation, batches), ``experts`` (the
closed-form experts and "epoch 0"), ``soup`` (keeping and averaging the best epochs), ``finetune`` (a text
encoder trained with the model) and ``fold_output`` (what the fold writes).
"""

from __future__ import annotations

import copy
import math
import os
import random
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from mmfer import runs
from mmfer.config import MmferConfig
from mmfer.errors import MmferError
from mmfer.features.base import stacked_layers
from mmfer.features.store import FeatureStore
from mmfer.models import EmotionModel, build_model
from mmfer.models.inference import infer, word_input
from mmfer.streams import stream
from mmfer.training import distributed
from mmfer.training.experts import given_scores, prefit_experts
from mmfer.training.finetune import finetuned_words, param_groups
from mmfer.training.fold_data import FoldData, balanced_loss, fold_data
from mmfer.training.fold_output import FoldResult, finish_fold
from mmfer.training.folds import Fold
from mmfer.training.metrics import scores
from mmfer.training.single import recorded, single_utterance_fallback
from mmfer.training.soup import epoch_rank, greedy_soup, keep


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


def class_weights(labels: np.ndarray, n: int) -> torch.Tensor:
    counts = np.bincount(labels, minlength=n).astype(float)
    w = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / n, 0.0)
    return torch.tensor(w, dtype=torch.float32)


def validate(model, data: FoldData, device, n_classes: int, objective: str, epoch: int) -> tuple[dict, dict]:
    """(the epoch as the soup and early stopping see it, its row of the learning curve)."""
    val = infer(model, data.sets["val"], device)
    s = scores(data.sets["val"].labels, val["probs"].argmax(1), n_classes)
    here = {"score": s[objective], "loss": val["loss"], "epoch": epoch}
    return here, {"epoch": epoch, "val_loss": val["loss"], "val_ua": s["ua"], "val_wa": s["wa"], "val_wf1": s["wf1"]}


def train_neural_fold(store: FeatureStore, fold: Fold, model_name: str, cfg: MmferConfig, classes: list[str],
                      run_dir: Path, progress: bool = True) -> FoldResult:
    started = time.perf_counter()
    tc, mc = cfg.train, cfg.model
    seed_everything(tc.seed + fold.index)
    torch.set_num_threads(cpu_threads(tc.threads))
    device = pick_device(tc.device)
    data = fold_data(store, fold, model_name, cfg, classes)
    sets, n = data.sets, len(classes)
    layers = stacked_layers({k: store.features[k].meta["settings"] for k in data.dims if k in store.features})
    word_model = finetuned_words(store, data, device) if tc.finetune_lexical else None
    model = build_model(model_name, data.dims, n, mc, layers, word_model).to(device)
    if tc.init_from:
        init_encoders(model, tc.init_from, fold.index, fold.seed)
    balanced = balanced_loss(cfg)
    prefit = prefit_experts(model, data, n, balanced, store, tc.objective, weigh_on=tc.weigh_experts_on)
    group = distributed.current()
    net = model
    if group is not None:  # several processes, one model: gradients averaged by DDP
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                      find_unused_parameters=True)
    weights = class_weights(sets["train"].labels, n) if balanced else None
    loss_fn = nn.CrossEntropyLoss(weight=None if weights is None else weights.to(device))
    opt = torch.optim.AdamW(param_groups(model, tc), lr=tc.lr, weight_decay=tc.weight_decay)
    # fp16 gradients underflow without loss scaling; bf16 and fp32 need none
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and tc.amp == "fp16")
    best = {"score": -1.0, "loss": float("inf"), "epoch": 0, "state": None}
    history = []
    kept: list[dict] = []  # the best epochs' weights, for the soup
    experts_alone = None
    if prefit:  # the prefitted experts alone are a candidate too ("epoch 0")
        here, row = validate(model, data, device, n, tc.objective, 0)
        best = {**here, "state": copy.deepcopy(model.state_dict())}
        experts_alone = dict(best)
        kept.append(dict(best))
        history.append({**row, "train_loss": float("nan")})
    bar = tqdm(range(1, tc.max_epochs + 1), desc=f"{model_name} fold {fold.name}", unit="ep",
               disable=not progress or (group is not None and not group.leader), leave=False)
    for epoch in bar:
        train_loss = train_epoch(model, net, sets["train"], loss_fn, opt, scaler, device, cfg, epoch, group)
        here, row = validate(model, data, device, n, tc.objective, epoch)
        history.append({**row, "train_loss": train_loss})
        bar.set_postfix(loss=f"{train_loss:.3f}", val=f"{here['score']:.3f}")
        if tc.soup > 1 and keep(kept, here, tc.soup):
            kept.append({**here, "state": copy.deepcopy(model.state_dict())})
        if epoch_rank(here) > epoch_rank(best):
            best = {**here, "state": kept[-1]["state"] if kept and kept[-1]["epoch"] == epoch
                    else copy.deepcopy(model.state_dict())}
        elif epoch - best["epoch"] >= tc.patience:
            break
    bar.close()
    model.load_state_dict(best["state"])
    souped, soup_score = (greedy_soup(model, kept, best, sets["val"], device, n, tc.objective)
                          if tc.soup > 1 else ([best["epoch"]], best["score"]))
    if experts_alone is not None and souped != [0] and not network_pays(
            soup_score, experts_alone["score"], len(sets["val"].labels), tc.experts_margin):
        model.load_state_dict(experts_alone["state"])
        best, souped, soup_score = experts_alone, [0], experts_alone["score"]
    if group is not None and not group.leader:  # rank 0 scores the test part and writes the fold
        return FoldResult({}, pd.DataFrame())
    test = infer(model, sets["test"], device)
    single = single_utterance_fallback(model, data, store, cfg, classes, device)
    extra = {**({"finetuned_lexical": True} if word_model is not None else {}),
             **({"single_utterance": single} if single else {})}
    return finish_fold(store, fold, model, cfg, classes, run_dir, data, test, started,
                       {"best_epoch": best["epoch"], "soup_epochs": souped, "objective": tc.objective,
                        "val_score": best["score"], "soup_val_score": soup_score,
                        **recorded(single),
                        "history": history, **prefit}, extra or None)


def network_pays(network: float, experts: float, n_val: int, margin: float) -> bool:
    """Whether the trained network's validation score beats the closed-form experts' by more than ``margin``
    standard errors of its own score (sqrt(s(1-s)/n)): the one-standard-error rule (Breiman et al. 1984).
    A few validation speakers decide, and the experts are the simpler model; a gain of two utterances in
    thirty is noise (RAVDESS with two emotions per actor: taking such gains cost three folds 2-9 UA points
    on their test actors, 2.3 overall; full RAVDESS: it cost one fold 1.5, 0.2 overall)."""
    if margin <= 0 or n_val == 0:  # validation's own choice stands (the behaviour before the rule)
        return True
    return network - experts > margin * math.sqrt(max(network * (1 - network), 0.0) / n_val)


def train_epoch(model: EmotionModel, net: nn.Module, train, loss_fn, opt, scaler, device, cfg: MmferConfig,
                epoch: int, group=None) -> float:
    """One pass over the training part (this process's share of it under DDP); the mean training loss."""
    tc, mc = cfg.train, cfg.model
    model.train()
    total, count = 0.0, 0
    given_scores(model, True)
    share = (lambda groups: distributed.my_share(groups, group)) if group is not None else None
    for batch in train.batches(tc.batch_size, shuffle=True, seed=tc.seed * 1000 + epoch, share=share):
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
    return total / max(count, 1)


def init_encoders(model: EmotionModel, init_from: dict[str, str], fold_index: int, seed: int | None = None) -> None:
    """Two-stage recipe: start a fused model's encoders from trained unimodal runs of the same fold (and
    the same seed, where the unimodal run has several)."""
    for modality, run_dir in init_from.items():
        kinds = [k for k in model.kinds if stream(k).modality == modality]
        if not kinds:
            raise MmferError(f"init_from: model '{model.name}' has no {modality!r} encoder")
        ckpt = runs.fold_dir(Path(run_dir), fold_index, seed) / runs.CHECKPOINT
        if seed is not None and not ckpt.is_file():
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
