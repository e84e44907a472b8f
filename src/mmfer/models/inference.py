"""The one inference function: cross-validation, ``mmfer predict`` and the web demo all call it."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from mmfer.data import UtteranceSet


def word_input(model: nn.Module, batch) -> dict:
    """The batch's words, for a model whose text encoder is part of it (train.finetune_lexical)."""
    return {"words": batch.words} if getattr(model, "word_model", None) is not None else {}


@torch.no_grad()
def infer(model: nn.Module, data: UtteranceSet, device: torch.device | str = "cpu", batch_size: int = 64) -> dict:
    """Probabilities, attention per sequence stream (mean over heads, real steps only) and gate, in
    ``data`` order; ``loss`` is the mean cross-entropy when ``data`` has labels (else NaN)."""
    model.eval()
    device = torch.device(device)
    pos = {u: i for i, u in enumerate(data.ids)}
    n = len(data)
    probs = np.zeros((n, model.n_classes), np.float32)
    attention: dict[str, list] = {}
    gate = np.full(n, np.nan, np.float32)
    loss_sum = 0.0
    labelled = bool(n) and bool((data.labels >= 0).all())
    for batch in data.batches(batch_size):
        batch = batch.to(device)
        out = model(batch.inputs, batch.lengths, **word_input(model, batch))
        logits = out["logits"].float()
        if labelled:
            loss_sum += nn.functional.cross_entropy(logits, batch.labels, reduction="sum").item()
        p = torch.softmax(logits, dim=-1).cpu().numpy()
        for j, u in enumerate(batch.ids):
            i = pos[u]
            probs[i] = p[j]
            for k, att in out["attention"].items():
                length = int(batch.lengths[k][j])
                attention.setdefault(k, [None] * n)[i] = att[j, :, :length].mean(0).float().cpu().numpy()
            if "gate" in out:
                gate[i] = float(out["gate"][j])
    return {"probs": probs, "attention": attention, "gate": gate,
            "loss": loss_sum / max(n, 1) if labelled else float("nan")}
