"""Scale: folds read batch by batch from the memory-mapped store past the memory budget; DDP through
torchrun (gloo on CPU); Ray for prepare, cv and batch prediction on a local two-node cluster."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch

from mmfer.config import load_config
from mmfer.data import StoredStream
from mmfer.features.store import FeatureStore
from mmfer.training import cv as cv_mod
from mmfer.training.folds import make_folds
from mmfer.training.trainer import fold_data
from synthetic_store import CLASSES, make_store

FAST = {"model": {"hidden": 16, "attention_dim": 16, "fusion_dim": 16, "frame_reduction": 2, "dropout": 0.1},
        "train": {"max_epochs": 3, "patience": 15, "lr": 0.01, "batch_size": 16, "threads": 1}}


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return make_store(tmp_path_factory.mktemp("scale") / "store")


def _cfg(**train):
    return load_config(None, {**FAST, "train": {**FAST["train"], **train}})


def test_fold_past_the_budget_is_read_from_the_store_and_equals_the_held_one(store):
    st = FeatureStore(store)
    fold = make_folds(st.corpus.table, val_speakers=2)[0]
    held = fold_data(st, fold, "mmmf", _cfg(), CLASSES)
    lazy = fold_data(st, fold, "mmmf", _cfg(memory_budget_gb=1e-6), CLASSES)
    assert all(s.in_memory for s in held.sets.values())
    assert not any(s.in_memory for s in lazy.sets.values())
    assert isinstance(lazy.sets["train"].arrays["acoustic"], StoredStream)
    for part in ("train", "val", "test"):
        a, b = held.sets[part], lazy.sets[part]
        assert np.array_equal(a.sizes, b.sizes)
        for x, y in zip(a.batches(16, shuffle=True, seed=3), b.batches(16, shuffle=True, seed=3)):
            assert x.ids == y.ids
            for k in x.inputs:
                assert torch.equal(x.inputs[k], y.inputs[k]) and torch.equal(x.lengths[k], y.lengths[k])


def test_cv_past_the_budget_gives_the_same_result(store, tmp_path):
    quiet = {"progress": False, "echo": lambda m: None}
    a = cv_mod.run_cv(store, "mmmf", _cfg(), tmp_path / "held", **quiet)
    b = cv_mod.run_cv(store, "mmmf", _cfg(memory_budget_gb=1e-6), tmp_path / "lazy", **quiet)
    assert [(f["ua"], f["best_epoch"]) for f in a["folds"]] == [(f["ua"], f["best_epoch"]) for f in b["folds"]]


def test_memory_of_a_fold_past_the_budget_does_not_grow_with_its_features(tmp_path):
    big = make_store(tmp_path / "big", kinds=("acoustic", "functionals"), frames=(3000, 5000))
    st = FeatureStore(big)
    fold = make_folds(st.corpus.table, val_speakers=2)[0]

    def peak(budget_gb: float) -> int:
        tracemalloc.start()
        data = fold_data(st, fold, "audio", _cfg(memory_budget_gb=budget_gb), CLASSES)
        for _ in data.sets["train"].batches(16, shuffle=True):
            pass
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top

    features = sum(st.features["acoustic"].offsets[u][1] for u in st.features["acoustic"].ids) * 8 * 4
    held, lazy = peak(2.0), peak(1e-6)
    assert held > 0.4 * features  # the fold's arrays are held (frames averaged in pairs: half the values)
    assert lazy < 0.25 * features, (held, lazy, features)  # one batch at a time
