"""Scale: folds read batch by batch from the memory-mapped store past the memory budget; DDP through
torchrun (gloo on CPU); Ray for prepare, cv and batch prediction on a local two-node cluster."""

from __future__ import annotations

import io
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch

from mmfer.config import load_config
from mmfer.data import StoredStream
from mmfer.features.store import FeatureStore
from mmfer.training import cv as cv_mod
from mmfer.training.fold_data import fold_data
from mmfer.training.folds import make_folds
from ray_cluster import RayCluster, free_port, listening, loopback
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
    # float16 frames, as the Whisper frames are stored: each read is a copy (the training statistics once
    # held every training utterance's copy at the same time: 3.4 GB on a 2.2-hour corpus)
    big = make_store(tmp_path / "big", kinds=("acoustic", "functionals", "pooled"), frames=(3000, 5000),
                     frames_dtype="float16")
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


# ---------------------------------------------------------------- Ray: a two-node cluster on loopback

@pytest.fixture(scope="module")
def ray_cluster():
    cluster = RayCluster()
    try:
        yield cluster
    finally:
        cluster.stop()


def _files(store: Path) -> dict[str, bytes]:
    return {str(p.relative_to(store)): p.read_bytes() for p in sorted(store.rglob("*"))
            if p.is_file() and p.suffix in (".npy", ".parquet", ".json", ".csv") and p.name != "store.json"}


def test_ray_cluster_has_two_nodes_on_loopback(ray_cluster):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", "import ray; ray.init(address='" + ray_cluster.address + "', "
                          "log_to_driver=False); print(sum(n['Alive'] for n in ray.nodes()), "
                          "int(ray.cluster_resources()['CPU']))"], env=ray_cluster.env, capture_output=True,
                         text=True, timeout=120)
    assert out.stdout.split() == ["2", "2"], out.stderr[-2000:]
    opened = ray_cluster.opened()
    assert len(opened) >= 4 and all(loopback(a) for a, _ in opened), opened


def test_prepare_via_ray_equals_the_local_store(ray_cluster, few_utterances, tmp_path):
    from mmfer.api import prepare

    local = tmp_path / "local"
    prepare(few_utterances, local, progress=False, warn=lambda m: None, allow_outside=True,
            streams=["acoustic", "lexical"])
    cfg = tmp_path / "small-shards.yaml"
    cfg.write_text("features: {shard_size: 4}\n")  # several shards per stream, so both nodes take some
    # the frames in small shards, written by the workers into the (shared) store folder
    ray_cluster.mmfer("prepare", few_utterances, "--out", tmp_path / "shared", "--ray", ray_cluster.address,
                      "--config", cfg, "--streams", "acoustic", "--allow-outside")
    # the word encoder batches within a shard, so its floats depend on the shard size: the default here,
    # and the arrays sent back to the driver (--ray-transfer)
    ray_cluster.mmfer("prepare", few_utterances, "--out", tmp_path / "sent", "--ray", ray_cluster.address,
                      "--ray-transfer", "--streams", "lexical", "--allow-outside")
    want = _files(local)
    shared, sent = _files(tmp_path / "shared"), _files(tmp_path / "sent")
    assert {k.split("-")[0] for k in shared if "/" in k} == {"acoustic"}
    assert {k.split("-")[0] for k in sent if "/" in k} == {"lexical"}
    # byte-identical to the local prepare (index, errors, metadata), the vectors equal to float rounding: the
    # Whisper encoder puts a shard's utterances of similar length in one call (a shard of 4 and one of 64
    # round differently), and a Ray worker's matrix products may round differently from a local worker's
    # (seen on 2026-12-07 for the word vectors too, with the code before the encoder batched)
    made = {**shared, **sent}
    differ = [k for k, v in made.items() if want[k] != v]
    assert all(k.endswith("/data.npy") for k in differ), differ
    for k in differ:
        a, b = (np.load(io.BytesIO(x)).astype(np.float32) for x in (want[k], made[k]))
        assert a.shape == b.shape and np.allclose(a, b, rtol=1e-2, atol=1e-2), (k, float(np.abs(a - b).max()))
        assert (a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()) > 0.9999
    assert all(loopback(a) for a, _ in ray_cluster.opened())


def test_cv_via_ray_equals_the_sequential_summary(ray_cluster, store, tmp_path):
    import json

    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("model: {hidden: 16, attention_dim: 16, fusion_dim: 16, frame_reduction: 2, dropout: 0.1}\n"
                   "train: {max_epochs: 3, patience: 15, lr: 0.01, batch_size: 16, threads: 1}\n")
    folds = ["Ses01", "Ses03"]
    seq = cv_mod.run_cv(store, "mmmf", load_config(cfg), tmp_path / "seq", progress=False, echo=lambda m: None,
                        only=folds)
    log = ray_cluster.mmfer("cv", store, "--model", "mmmf", "--config", cfg, "--out", tmp_path / "ray", "--ray",
                            ray_cluster.address, "--fold", folds[0], "--fold", folds[1])
    assert "submitted to Ray" in log
    via = json.loads((tmp_path / "ray" / "summary.json").read_text())
    same = lambda s: {k: v for k, v in s.items() if k != "seconds_per_fold"}  # noqa: E731
    assert same(via) == json.loads(json.dumps(same(seq)))
    again = ray_cluster.mmfer("cv", store, "--model", "mmmf", "--config", cfg, "--out", tmp_path / "ray", "--ray",
                              ray_cluster.address, "--fold", folds[0], "--fold", folds[1])
    assert len(seq["folds"]) == 2 and again.count("done earlier") == 2  # resumes per fold


def test_predict_via_ray_writes_the_same_output(ray_cluster, sample_corpus, trained_runs, tmp_path):
    import pandas as pd

    table = pd.read_parquet(trained_runs.parent / "store" / "corpus.parquet").head(12)
    manifest = tmp_path / "m.csv"
    table[["audio", "text", "speaker", "dialog"]].rename(columns={"dialog": "dialogue"}).to_csv(manifest, index=False)
    model = trained_runs / "mmmf"
    from mmfer.api import load

    load(model, asr="none").predict_files(manifest, tmp_path / "local.csv", progress=False, allow_outside=True,
                                          echo=lambda m: None)  # in-process: the same rows as `mmfer predict`
    ray_cluster.mmfer("predict", model, manifest, "--out", tmp_path / "ray.csv", "--asr", "none", "--allow-outside",
                      "--ray", ray_cluster.address)
    a, b = pd.read_csv(tmp_path / "local.csv"), pd.read_csv(tmp_path / "ray.csv")
    assert list(a.columns) == list(b.columns) and len(a) == len(table)
    assert list(a["key"]) == list(b["key"]) and list(a["emotion"]) == list(b["emotion"])
    probs = [c for c in a.columns if c.startswith("p_")]
    assert np.abs(a[probs].to_numpy() - b[probs].to_numpy()).max() <= 2e-5  # batch composition: last digit
    assert all(loopback(a) for a, _ in ray_cluster.opened())


def test_without_ray_nothing_imports_it_and_without_the_extra_it_says_what_to_install(monkeypatch):
    import subprocess
    import sys

    code = ("import sys, mmfer.cli, mmfer.features.prepare, mmfer.training.cv, mmfer.serve.batch; "
            "print('ray' in sys.modules, 'mmfer.cluster' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.split() == ["False"] * 2
    from mmfer import cluster
    from mmfer.errors import MmferError

    monkeypatch.setitem(sys.modules, "ray", None)  # as if mmfer[cluster] were not installed
    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # connect sets it; restored after the test
    with pytest.raises(MmferError, match=r"pip install 'mmfer\[cluster\]'"):
        cluster.connect("local")
