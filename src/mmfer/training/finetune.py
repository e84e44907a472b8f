"""Fine-tuning the text encoder with the model (``train.finetune_lexical``; for a GPU)."""

from __future__ import annotations

import warnings

import torch
from torch import nn

from mmfer.errors import MmferError
from mmfer.features.store import FeatureStore
from mmfer.training.fold_data import FoldData


def finetuned_words(store: FeatureStore, data: FoldData, device: torch.device) -> nn.Module:
    """The stored text encoder, to be trained with the model. Every part of the fold carries its words into
    the batches; the fold's training statistics z-score the encoder's output as they do the stored vectors."""
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


def param_groups(model: nn.Module, tc) -> list[dict]:
    """The fine-tuned text encoder learns at ``train.finetune_lr`` (a pretrained transformer forgets at
    the rate that suits a freshly initialised BLSTM); everything else at ``train.lr``."""
    tuned = list(model.word_model.parameters()) if getattr(model, "word_model", None) is not None else []
    ids = {id(p) for p in tuned}
    rest = [p for p in model.parameters() if id(p) not in ids]
    return [{"params": rest}] + ([{"params": tuned, "lr": tc.finetune_lr}] if tuned else [])
