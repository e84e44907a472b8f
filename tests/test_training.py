from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix, f1_score

from mmfer.config import load_config
from mmfer.errors import MmferError
from mmfer.features.store import FeatureStore
from mmfer.training import cv as cv_mod
from mmfer.training.folds import make_folds
from mmfer.training.metrics import scores
from synthetic_store import make_store

FAST = {"model": {"hidden": 16, "attention_dim": 16, "fusion_dim": 16, "frame_reduction": 2, "dropout": 0.1},
        "train": {"max_epochs": 15, "patience": 15, "lr": 0.01, "batch_size": 16, "threads": 1}}


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return make_store(tmp_path_factory.mktemp("st") / "store")


def test_loso_folds_are_speaker_independent(store):
    table = FeatureStore(store).corpus.table
    folds = make_folds(table, val_speakers=2)
    assert [f.name for f in folds] == ["Ses01", "Ses02", "Ses03", "Ses04"]
    spk = dict(zip(table["utt_id"], table["speaker"]))
    for f in folds:
        tr, va, te = ({spk[u] for u in ids} for ids in (f.train, f.val, f.test))
        assert not (tr & te) and not (va & te) and not (tr & va)
        assert te == {f"{f.name}F", f"{f.name}M"} and len(va) == 2
        assert len(f.train) + len(f.val) + len(f.test) == len(table)
    assert len({tuple(f.val_speakers) for f in folds}) == 4  # validation rotates


def test_speaker_grouped_folds_without_sessions(tmp_path):
    table = FeatureStore(make_store(tmp_path / "s", with_sessions=False, sessions=3)).corpus.table
    folds = make_folds(table, val_speakers=1, k=3)
    assert len(folds) == 3
    assert sorted(s for f in folds for s in f.test_speakers) == sorted(table["speaker"].unique())


def test_metrics_equal_scikit_learn():
    rng = np.random.default_rng(0)
    y, p = rng.integers(0, 4, 200), rng.integers(0, 4, 200)
    p[:30] = y[:30]
    s = scores(y, p, 4)
    assert s["wa"] == pytest.approx(accuracy_score(y, p))
    assert s["ua"] == pytest.approx(balanced_accuracy_score(y, p))
    assert s["f1"] == pytest.approx(f1_score(y, p, average="macro"))
    assert s["confusion"] == confusion_matrix(y, p).tolist()


@pytest.mark.parametrize("model", ["audio", "text", "mmmf", "concat", "late"])
def test_each_model_learns_a_separable_set(store, tmp_path, model):
    summary = cv_mod.run_cv(store, model, load_config(None, FAST), tmp_path / model, progress=False,
                            echo=lambda m: None)
    assert summary["ua"]["mean"] > 0.7, summary  # chance is 0.25
    assert len(summary["folds"]) == 4 and sum(map(sum, summary["confusion"])) == 128


def test_run_files_and_normalisation_from_train_only(store, tmp_path):
    out = tmp_path / "run"
    cv_mod.run_cv(store, "mmmf", load_config(None, FAST), out, progress=False, echo=lambda m: None)
    s = json.loads((out / "summary.json").read_text())
    assert s["model"] == "mmmf" and set(s["ua"]) == {"mean", "std"} and 0 <= s["wa"]["mean"] <= 1
    assert {"fold", "test", "wa", "ua", "f1"} <= set(s["folds"][0])
    import pandas as pd

    pred = pd.read_parquet(out / "fold-1" / "predictions.parquet")
    fs = FeatureStore(store)
    folds = make_folds(fs.corpus.table, 2)
    assert sorted(pred["utt_id"]) == sorted(folds[0].test)
    row = pred.iloc[0]
    assert len(row["audio_attention"]) == -(-fs.features["acoustic"].length(row["utt_id"]) // 2)  # reduced by 2
    assert abs(sum(row["text_attention"]) - 1) < 1e-5 and 0 < row["gate"] < 1
    assert abs(sum(row["probs"]) - 1) < 1e-5
    m = json.loads((out / "fold-1" / "metrics.json").read_text())  # the epoch soup starts from the best epoch
    assert m["soup_epochs"][0] == m["best_epoch"] and m["soup_val_score"] >= m["val_score"]
    ckpt = torch.load(out / "fold-1" / "model.pt", weights_only=True)
    train_frames = np.concatenate([fs.features["acoustic"].get(u) for u in folds[0].train])
    all_frames = np.concatenate([fs.features["acoustic"].get(u) for u in fs.features["acoustic"].ids])
    assert np.allclose(ckpt["norms"]["acoustic"]["mean"], train_frames.mean(0), atol=1e-4)
    assert not np.allclose(ckpt["norms"]["acoustic"]["mean"], all_frames.mean(0), atol=1e-4)


def test_interrupted_cv_resumes_at_next_fold(store, tmp_path, monkeypatch):
    from mmfer.training import fold as fold_mod

    out = tmp_path / "run"
    cfg = load_config(None, {**FAST, "train": {**FAST["train"], "max_epochs": 2}})
    real = fold_mod.TRAINERS["neural"].train
    calls = []
    stop_at = {"fold": "Ses02"}

    def interrupted(store_, fold, *a, **k):
        calls.append(fold.name)
        if fold.name == stop_at["fold"]:
            raise KeyboardInterrupt  # Ctrl-C during the second fold
        return real(store_, fold, *a, **k)

    monkeypatch.setitem(fold_mod.TRAINERS, "neural", fold_mod.FoldTrainer(interrupted, distributed=True))
    with pytest.raises(KeyboardInterrupt):
        cv_mod.run_cv(store, "audio", cfg, out, progress=False, echo=lambda m: None)
    assert (out / "fold-1" / "metrics.json").is_file() and not (out / "fold-2").exists()
    first = (out / "fold-1" / "metrics.json").stat().st_mtime_ns
    calls.clear()
    stop_at["fold"] = None
    summary = cv_mod.run_cv(store, "audio", cfg, out, progress=False, echo=lambda m: None)
    assert calls == ["Ses02", "Ses03", "Ses04"]
    assert (out / "fold-1" / "metrics.json").stat().st_mtime_ns == first
    assert [f["fold"] for f in summary["folds"]] == ["Ses01", "Ses02", "Ses03", "Ses04"]
    with pytest.raises(MmferError, match="another model, store or features"):
        cv_mod.run_cv(store, "text", cfg, out, progress=False, echo=lambda m: None)


def test_a_run_is_reproducible_from_its_own_folder(store, tmp_path):
    """A run's config.yaml loads with --config as it is; what it was made of is in provenance.json."""
    cfg = load_config(None, {**FAST, "train": {**FAST["train"], "max_epochs": 1}})
    cv_mod.run_cv(store, "text", cfg, tmp_path / "run", progress=False, echo=lambda m: None, only=["Ses01"])
    assert load_config(tmp_path / "run" / "config.yaml") == cfg
    prov = json.loads((tmp_path / "run" / "provenance.json").read_text())
    assert prov["model"] == "text" and prov["store"] == str(store) and set(prov["features"]) == {"lexical"}
    assert {"torch", "numpy", "python"} <= set(prov["versions"])
    again = load_config(tmp_path / "run" / "config.yaml")
    cv_mod.run_cv(store, "text", again, tmp_path / "again", progress=False, echo=lambda m: None, only=["Ses01"])
    assert json.loads((tmp_path / "again" / "fold-1" / "metrics.json").read_text())["ua"] == json.loads(
        (tmp_path / "run" / "fold-1" / "metrics.json").read_text())["ua"]


def test_missing_modality_is_refused(tmp_path):
    audio_only = make_store(tmp_path / "a", kinds=("acoustic",))
    with pytest.raises(MmferError, match="model 'mmmf' needs the text modality"):
        cv_mod.run_cv(audio_only, "mmmf", load_config(None, FAST), tmp_path / "r", progress=False)


def test_same_seed_same_result(store, tmp_path):
    cfg = load_config(None, {**FAST, "train": {**FAST["train"], "max_epochs": 3}})
    a = cv_mod.run_cv(store, "text", cfg, tmp_path / "a", progress=False, echo=lambda m: None)
    b = cv_mod.run_cv(store, "text", cfg, tmp_path / "b", progress=False, echo=lambda m: None)
    assert a["folds"] == b["folds"]


def test_two_stage_init_from_unimodal_runs(store, tmp_path):
    from mmfer.models import build_model
    from mmfer.training.trainer import init_encoders

    cfg = load_config(None, {**FAST, "train": {**FAST["train"], "max_epochs": 1}})
    for m in ("audio", "text"):
        cv_mod.run_cv(store, m, cfg, tmp_path / m, progress=False, echo=lambda s: None)
    dims = {"acoustic": 8, "lexical": 6, "functionals": 10, "pooled": 12, "sentence": 6, "context": 6}
    model = build_model("mmmf", dims, 4, cfg.model)
    init_encoders(model, {"audio": str(tmp_path / "audio"), "text": str(tmp_path / "text")}, fold_index=2)
    for modality, kind in (("audio", "acoustic"), ("text", "lexical")):
        ref = torch.load(tmp_path / modality / "fold-3" / "model.pt", weights_only=True)["state_dict"]
        for name, tensor in model.encoders[kind].state_dict().items():
            assert torch.equal(tensor, ref[f"encoders.{kind}.{name}"])
    with pytest.raises(MmferError, match="fold-9/model.pt not found"):
        init_encoders(model, {"audio": str(tmp_path / "audio")}, fold_index=8)
    summary = cv_mod.run_cv(store, "mmmf", load_config(None, {**FAST, "train": {
        **FAST["train"], "max_epochs": 1, "init_from": {"audio": str(tmp_path / "audio"),
                                                         "text": str(tmp_path / "text")}}}),
        tmp_path / "mmmf", progress=False, echo=lambda s: None)
    assert len(summary["folds"]) == 4


def test_cv_command_prints_table(store, tmp_path):
    from typer.testing import CliRunner

    from mmfer.cli import app

    cfg = tmp_path / "c.yaml"
    cfg.write_text("model:\n  hidden: 8\n  attention_dim: 8\ntrain:\n  threads: 1\n")
    res = CliRunner().invoke(app, ["cv", str(store), "--model", "text", "--config", str(cfg), "--max-epochs", "1",
                                   "--out", str(tmp_path / "run")])
    assert res.exit_code == 0, res.output
    assert "text fold Ses04: WA" in res.stdout and "macro-F1" in res.stdout
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["model"] == "text"
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  hiden: 8\n")
    res = CliRunner().invoke(app, ["cv", str(store), "--config", str(bad), "--out", str(tmp_path / "r2")])
    assert res.exit_code != 0 and "hiden" in str(res.exception)


def test_epoch_soup_keeps_the_best_and_averages_weights():
    from mmfer.training.soup import average_states, keep

    kept: list[dict] = []
    for epoch, score in enumerate([0.5, 0.7, 0.6, 0.8, 0.4, 0.65]):
        here = {"score": score, "loss": 1.0, "epoch": epoch}
        if keep(kept, here, 3):
            kept.append(here)
    assert sorted(d["epoch"] for d in kept) == [1, 3, 5]  # the three best, whatever their order
    a = {"w": torch.tensor([1.0, 3.0]), "steps": torch.tensor(5)}
    b = {"w": torch.tensor([3.0, 5.0]), "steps": torch.tensor(7)}
    avg = average_states([a, b])
    assert avg["w"].tolist() == [2.0, 4.0] and int(avg["steps"]) == 5  # integer buffers are not averaged
    assert average_states([a]) is a


def test_fusion_options_train(store, tmp_path):
    """model.stack_experts, aux_weight and modality_dropout go through training; stacking's start (the
    experts' sum, 'epoch 0') is a candidate that validation judges."""
    ov = {"model": {**FAST["model"], "stack_experts": True, "aux_weight": 0.5, "modality_dropout": 0.2},
          "train": {**FAST["train"], "max_epochs": 3}}
    out = tmp_path / "run"
    summary = cv_mod.run_cv(store, "mmmf", load_config(None, ov), out, progress=False, echo=lambda m: None)
    assert summary["ua"]["mean"] > 0.4
    m = json.loads((out / "fold-1" / "metrics.json").read_text())
    assert m["history"][0]["epoch"] == 0 and len(m["history"]) == 4
    assert len(torch.load(out / "fold-1" / "model.pt", weights_only=True)["state_dict"]["expert_scale"]) == 3


def test_network_pays_only_beyond_one_standard_error():
    from mmfer.training.trainer import network_pays

    assert not network_pays(0.84, 0.78, 28, 1.0)  # two utterances in 28: noise (se 0.069)
    assert network_pays(0.95, 0.78, 28, 1.0) and network_pays(0.84, 0.78, 400, 1.0)  # se 0.018
    assert network_pays(0.78, 0.80, 28, 0.0)  # margin 0: validation's own choice stands


def test_experts_stay_unless_the_network_beats_them_clearly(store, tmp_path):
    """A margin no network can clear keeps the closed-form experts alone ('epoch 0') in every fold, with
    their validation score; margin 0 lets validation's best epoch stand."""
    cfg = load_config(None, {**FAST, "train": {**FAST["train"], "max_epochs": 4, "experts_margin": 100.0}})
    cv_mod.run_cv(store, "audio", cfg, tmp_path / "kept", progress=False, echo=lambda m: None)
    for m in (json.loads(p.read_text()) for p in sorted((tmp_path / "kept").glob("fold-*/metrics.json"))):
        assert m["best_epoch"] == 0 and m["soup_epochs"] == [0] and len(m["history"]) > 1
        assert m["val_score"] == m["history"][0]["val_ua"]
    cfg = load_config(None, {**FAST, "train": {**FAST["train"], "max_epochs": 4, "experts_margin": 0.0}})
    cv_mod.run_cv(store, "audio", cfg, tmp_path / "free", progress=False, echo=lambda m: None)
    free = [json.loads(p.read_text()) for p in sorted((tmp_path / "free").glob("fold-*/metrics.json"))]
    assert any(m["best_epoch"] > 0 for m in free)  # the network wins somewhere on this separable set
    assert all(m["val_score"] == max(h["val_ua"] for h in m["history"]) for m in free)
