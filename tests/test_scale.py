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


# ---------------------------------------------------------------- loopback only

def listening() -> set[tuple[str, int]]:
    """(address, port) of every listening TCP socket of this machine (IPv4 and IPv6), from /proc."""
    out = set()
    for path, v6 in (("/proc/net/tcp", False), ("/proc/net/tcp6", True)):
        try:
            lines = Path(path).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            if state != "0A":
                continue
            addr, port = local.split(":")
            if v6:
                ip = "::1" if addr == "0" * 24 + "01000000" else ("::" if set(addr) == {"0"} else addr)
            else:
                ip = ".".join(str(int(addr[i:i + 2], 16)) for i in (6, 4, 2, 0))
            out.add((ip, int(port, 16)))
    return out


def loopback(addr: str) -> bool:
    return addr.startswith("127.") or addr == "::1" or addr.endswith("0000FFFF0100007F")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- DDP through torchrun

def test_torchrun_two_processes_train_one_fold_on_loopback(store, tmp_path):
    import subprocess
    import sys
    import time

    from mmfer import runs
    from mmfer.models import build_model
    from mmfer.models.inference import infer

    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("model: {hidden: 16, attention_dim: 16, fusion_dim: 16, frame_reduction: 2, dropout: 0.1}\n"
                   "train: {max_epochs: 6, patience: 15, lr: 0.01, batch_size: 16}\n")
    before = listening()
    proc = subprocess.Popen([sys.executable, "-m", "mmfer.training.launch", "--nproc_per_node", "2", "--master_port",
                             str(free_port()), "-m", "mmfer", "cv", str(store), "--model", "mmmf", "--distributed",
                             "--out", str(tmp_path / "run"), "--config", str(cfg), "--fold", "Ses01"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    opened = set()
    while proc.poll() is None:
        opened |= listening() - before
        time.sleep(0.2)
    log = proc.stdout.read()
    assert proc.returncode == 0, log[-2000:]
    assert opened, "saw no listening socket: the check would not catch one"
    assert all(loopback(a) for a, _ in opened), opened
    metrics = runs.fold_done(tmp_path / "run", 0)
    assert metrics is not None and metrics["fold"] == "Ses01" and runs.fold_done(tmp_path / "run", 1) is None
    losses = [h["train_loss"] for h in metrics["history"] if h["epoch"] > 0]
    assert losses[-1] < losses[0]
    ckpt = runs.read_checkpoint(tmp_path / "run" / "fold-1" / runs.CHECKPOINT)
    model = build_model(ckpt["model"], ckpt["dims"], len(ckpt["classes"]), load_config(None, FAST).model.model_copy(
        update=ckpt["model_config"]))
    model.load_state_dict(ckpt["state_dict"])
    data = fold_data(FeatureStore(store), make_folds(FeatureStore(store).corpus.table, 2)[0], "mmmf", _cfg(), CLASSES)
    probs = infer(model, data.sets["test"])["probs"]
    assert np.allclose(probs.sum(1), 1, atol=1e-5)
    ua = np.mean([(probs.argmax(1)[data.sets["test"].labels == c] == c).mean() for c in range(len(CLASSES))])
    assert abs(ua - metrics["ua"]) < 1e-6  # the saved model is the one that was scored


def test_distributed_outside_torchrun_says_how(store, tmp_path):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK")}
    r = subprocess.run([sys.executable, "-m", "mmfer", "cv", str(store), "--model", "text", "--distributed", "--out",
                        str(tmp_path / "r")], capture_output=True, text=True, env=env)
    assert r.returncode == 2 and "torchrun --nproc_per_node" in r.stderr and len(r.stderr.splitlines()) == 1
