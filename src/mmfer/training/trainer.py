"""Train one fold: early stopping on validation UA, then one look at the test speakers."""

from __future__ import annotations

import copy
import os
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from mmfer import runs
from mmfer.config import MmferConfig
from mmfer.data import UtteranceSet, fit_normalizers
from mmfer.errors import MmferError
from mmfer.features.store import FeatureStore
from mmfer.models import EmotionModel, build_model, get_model
from mmfer.models.inference import infer
from mmfer.streams import STREAMS, stream
from mmfer.training.folds import Fold
from mmfer.training.metrics import scores


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def pick_device(pref: str) -> torch.device:
    if pref == "cuda" or (pref == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def autocast(device: torch.device, amp: str):
    if device.type != "cuda" or amp == "off":
        return torch.autocast(device.type, enabled=False)
    return torch.autocast("cuda", dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


@dataclass
class FoldResult:
    metrics: dict
    predictions: pd.DataFrame


def class_weights(labels: np.ndarray, n: int) -> torch.Tensor:
    counts = np.bincount(labels, minlength=n).astype(float)
    w = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / n, 0.0)
    return torch.tensor(w, dtype=torch.float32)


def train_fold(store: FeatureStore, fold: Fold, model_name: str, cfg: MmferConfig, classes: list[str],
               run_dir: Path, progress: bool = True) -> FoldResult:
    spec = get_model(model_name)
    kinds = list(spec.streams)
    store.corpus.require(spec.modalities, f"model '{model_name}'")
    usable = set(store.usable_ids(kinds))
    train_ids = [u for u in fold.train if u in usable]
    val_ids = [u for u in fold.val if u in usable]
    test_ids = [u for u in fold.test if u in usable]
    tc, mc = cfg.train, cfg.model
    seed_everything(tc.seed + fold.index)
    torch.set_num_threads(tc.threads or os.cpu_count() or 1)
    device = pick_device(tc.device)
    norms = fit_normalizers(store, train_ids, kinds)  # training part only: no peeking at val/test
    sets = {name: UtteranceSet.from_store(store, ids, classes, kinds, norms, mc.frame_reduction)
            for name, ids in (("train", train_ids), ("val", val_ids), ("test", test_ids))}
    dims = {k: store.features[k].dim for k in kinds}
    model = build_model(model_name, dims, len(classes), mc).to(device)
    if tc.init_from:
        init_encoders(model, tc.init_from, fold.index)
    weights = class_weights(sets["train"].labels, len(classes)) if tc.class_weighted else None
    loss_fn = nn.CrossEntropyLoss(weight=None if weights is None else weights.to(device))
    opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    # fp16 gradients underflow without loss scaling; bf16 and fp32 need none
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and tc.amp == "fp16")
    best = {"ua": -1.0, "loss": float("inf"), "epoch": 0, "state": None}
    history = []
    bar = tqdm(range(1, tc.max_epochs + 1), desc=f"{model_name} fold {fold.name}", unit="ep",
               disable=not progress, leave=False)
    for epoch in bar:
        model.train()
        total, count = 0.0, 0
        for batch in sets["train"].batches(tc.batch_size, shuffle=True, seed=tc.seed * 1000 + epoch):
            batch = batch.to(device)
            with autocast(device, tc.amp):
                logits = model(batch.inputs, batch.lengths)["logits"]
            loss = loss_fn(logits.float(), batch.labels)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            nn.utils.clip_grad_norm_(model.parameters(), tc.clip)
            scaler.step(opt)
            scaler.update()
            total += loss.item() * len(batch.ids)
            count += len(batch.ids)
        val = infer(model, sets["val"], device)
        val_scores = scores(sets["val"].labels, val["probs"].argmax(1), len(classes))
        history.append({"epoch": epoch, "train_loss": total / max(count, 1), "val_loss": val["loss"],
                        "val_ua": val_scores["ua"], "val_wa": val_scores["wa"]})
        bar.set_postfix(loss=f"{total / max(count, 1):.3f}", val_ua=f"{val_scores['ua']:.3f}")
        if (val_scores["ua"], -val["loss"]) > (best["ua"], -best["loss"]):
            best = {"ua": val_scores["ua"], "loss": val["loss"], "epoch": epoch,
                    "state": copy.deepcopy(model.state_dict())}
        elif epoch - best["epoch"] >= tc.patience:
            break
    bar.close()
    model.load_state_dict(best["state"])
    test = infer(model, sets["test"], device)
    pred = test["probs"].argmax(1)
    result = scores(sets["test"].labels, pred, len(classes))
    metrics = {"fold": fold.name, "test": fold.name, "test_speakers": fold.test_speakers,
               "val_speakers": fold.val_speakers, "n_train": len(train_ids), "n_val": len(val_ids),
               "n_test": len(test_ids), "best_epoch": best["epoch"], "val_ua": best["ua"], "classes": classes,
               **result, "history": history}
    columns = {"utt_id": test_ids, "fold": fold.name,
               "true": [classes[i] for i in sets["test"].labels], "pred": [classes[i] for i in pred],
               "probs": [p.tolist() for p in test["probs"]]}
    for s in STREAMS.values():  # every attention column, empty where this model has no such stream
        if s.attention_column:
            att = test["attention"].get(s.name)
            columns[s.attention_column] = [a.tolist() for a in att] if att else [None] * len(test_ids)
    columns["gate"] = test["gate"]
    predictions = pd.DataFrame(columns)
    runs.save_checkpoint(runs.fold_dir(run_dir, fold.index) / runs.CHECKPOINT, model, mc, classes, dims, norms,
                         {k: store.features[k].meta["settings"] for k in kinds})
    runs.write_fold(run_dir, fold.index, predictions, metrics)
    return FoldResult(metrics, predictions)


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
