"""What the real-data work added: protocols, speaker normalisation, dialogue context, the closed-form
functionals scores, the linear baselines, weighted F1, Unicode words, manifest columns."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mmfer.config import load_config
from mmfer.corpora import read_corpus
from mmfer.corpora.text import words_of
from mmfer.data import attach_derived, fit_normalizers
from mmfer.errors import MmferError
from mmfer.features.store import FeatureStore
from mmfer.training import cv as cv_mod
from mmfer.training.folds import make_folds, resolve_protocol
from synthetic_store import make_store

FAST = {"model": {"hidden": 8, "attention_dim": 8, "fusion_dim": 8, "frame_reduction": 2},
        "train": {"max_epochs": 4, "patience": 4, "lr": 0.01, "batch_size": 16, "threads": 1}}


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return make_store(tmp_path_factory.mktemp("acc") / "store")


def _table(speakers: int, split: bool = False) -> pd.DataFrame:
    rows = []
    for s in range(speakers):
        for i in range(4):
            rows.append({"utt_id": f"u{s}_{i}", "speaker": f"A{s + 1:02d}", "session": "",
                         "split": ("train", "dev", "test")[s % 3] if split else ""})
    return pd.DataFrame(rows)


def test_protocols():
    t = _table(24)
    folds = make_folds(t, val_speakers=2, k=6, protocol="kfold-speaker")
    assert [f.test_speakers for f in folds][:2] == [["A01", "A02", "A03", "A04"], ["A05", "A06", "A07", "A08"]]
    for f in folds:
        assert not set(f.val_speakers) & set(f.test_speakers) and len(f.test) == 16
    loso = make_folds(t, 2, protocol="loso-speaker")
    assert len(loso) == 24 and all(len(f.test_speakers) == 1 for f in loso)
    st = _table(6, split=True)
    assert resolve_protocol(st) == "split" and resolve_protocol(t) == "kfold-speaker"
    (fold,) = make_folds(st, protocol="split")
    assert fold.name == "test" and fold.test == st.loc[st["split"] == "test", "utt_id"].tolist()
    assert set(fold.val) == set(st.loc[st["split"] == "dev", "utt_id"])
    with pytest.raises(MmferError, match="loso-session needs"):
        make_folds(t, protocol="loso-session")


def test_normaliser_z_scores_into_a_new_float32_array_and_clips():
    """Stored frames are float16: z-scores come out float32, equal to (a - mean) / std, clipped when asked,
    and the input (a memory-mapped store's array, a predictor's features) is never written."""
    from mmfer.data import Normalizer, prepare_stream

    rng = np.random.default_rng(0)
    a = (rng.standard_normal((9, 6)) * 4).astype(np.float16)
    before = a.copy()
    mean, std = rng.standard_normal(6).astype(np.float32), (rng.random(6) + 0.5).astype(np.float32)
    z = prepare_stream("acoustic", a, Normalizer(mean, std), 1)
    assert z.dtype == np.float32 and np.array_equal(z, (a.astype(np.float32) - mean) / std)
    clipped = Normalizer(mean, std, clip=2.0)(a)
    assert np.array_equal(clipped, np.clip((a - mean) / std, -2.0, 2.0)) and np.abs(clipped).max() == 2.0
    assert np.array_equal(a, before)


def test_speaker_normalisation_uses_each_speakers_own_statistics(store):
    fs = FeatureStore(store)
    table = fs.corpus.table
    train = table.loc[table["session"] != "Ses01", "utt_id"].tolist()
    norms = fit_normalizers(fs, train, ["functionals", "lexical"], mode="speaker", min_utterances=10)
    spk = "Ses01M"  # a test speaker: its own statistics, from its utterances, no labels involved
    own = np.concatenate([fs.features["functionals"].get(u) for u in table.loc[table["speaker"] == spk, "utt_id"]])
    z = norms["functionals"].for_speaker(spk)(own)
    assert np.allclose(z.mean(0), 0, atol=1e-4) and np.allclose(z.std(0), 1, atol=1e-3)
    assert norms["lexical"].speakers == {}  # word vectors are not speaker-normalised
    few = fit_normalizers(fs, train, ["functionals"], mode="speaker", min_utterances=17)
    assert few["functionals"].speakers == {} and few["functionals"].for_speaker(spk) is few["functionals"].train
    corpus = fit_normalizers(fs, train, ["functionals"], mode="corpus")
    assert corpus["functionals"].speakers == {}
    none = fit_normalizers(fs, train, ["functionals"], mode="none")
    assert np.array_equal(none["functionals"].train(own), own)


def test_training_statistics_come_from_per_speaker_sums_read_once(store, monkeypatch):
    """A fold's training statistics equal those of its utterances read one by one, whether it holds whole
    speakers (their cached sums) or part of one (read); a second fold reads no frames of a whole speaker,
    and a derived stream attached anew is summed anew."""
    from mmfer.data import Normalizer, speaker_sums

    fs = FeatureStore(store)
    table = fs.corpus.table
    whole = table.loc[table["session"] != "Ses01", "utt_id"].tolist()
    partial = whole + table.loc[table["speaker"] == "Ses01F", "utt_id"].tolist()[:5]
    for ids in (whole, partial):
        for k in ("functionals", "acoustic"):
            got = fit_normalizers(fs, ids, [k], mode="corpus")[k].train
            want = Normalizer.fit(fs.features[k].get(u) for u in ids)
            assert np.allclose(got.mean, want.mean, rtol=1e-6, atol=1e-7)
            assert np.allclose(got.std, want.std, rtol=1e-6, atol=1e-7)
    reads = []
    features = fs.features["functionals"]
    original = type(features).get
    monkeypatch.setattr(type(features), "get", lambda self, u: reads.append(u) or original(self, u))
    fit_normalizers(fs, partial, ["functionals"], mode="speaker")
    assert sorted(reads) == sorted(partial[len(whole):])  # only the partial speaker's five
    attach_derived(fs, ["sentence"], before=0, after=0)
    first = speaker_sums(fs, "sentence")
    assert speaker_sums(fs, "sentence") is first  # cached
    del fs.features["sentence"]
    attach_derived(fs, ["sentence"], before=0, after=0)
    again = speaker_sums(fs, "sentence")
    assert again is not first and all(np.array_equal(again[s][1].s, first[s][1].s) for s in first)


def test_context_is_the_previous_utterances_text_never_labels(store):
    fs = FeatureStore(store)
    attach_derived(fs, ["context", "sentence"], before=2, after=0)
    ctx, lex = fs.features["context"], fs.features["lexical"]
    t = fs.corpus.table
    ids = t.loc[t["dialog"] == "Ses02F_impro01"].sort_values(["start", "utt_id"])["utt_id"].tolist()
    assert np.all(ctx.get(ids[0]) == 0)  # nothing precedes the first utterance
    expect = np.mean([lex.get(ids[1]).mean(0), lex.get(ids[2]).mean(0)], axis=0)
    assert np.allclose(ctx.get(ids[3])[0], expect, atol=1e-6)
    assert np.allclose(fs.features["sentence"].get(ids[3])[0], lex.get(ids[3]).mean(0), atol=1e-6)
    assert ctx.meta["settings"]["before"] == 2


def test_stacked_audio_model_starts_as_the_linear_baseline(store, tmp_path):
    """Epoch 0 of the audio model is its closed-form experts weighed on validation: the functionals expert
    has audio-svm's C and validation score on the same fold, the weighed pair scores at least as well, and
    training can only be chosen over it by the validation speakers."""
    cfg = load_config(None, {**FAST, "features": {"normalise": "speaker"}, "train": {
        **FAST.get("train", {}), "weigh_experts_on": "validation"}})
    svm = cv_mod.run_cv(store, "audio-svm", cfg, tmp_path / "svm", progress=False, echo=lambda m: None)
    audio = cv_mod.run_cv(store, "audio", cfg, tmp_path / "audio", progress=False, echo=lambda m: None)
    assert svm["ua"]["mean"] > 0.5 and audio["ua"]["mean"] > 0.5  # chance is 0.25
    for i in range(1, 5):
        m_svm = json.loads((tmp_path / "svm" / f"fold-{i}" / "metrics.json").read_text())
        m_audio = json.loads((tmp_path / "audio" / f"fold-{i}" / "metrics.json").read_text())
        assert m_audio["functionals_C"] == m_svm["C"]
        assert m_audio["functionals_val_score"] == pytest.approx(m_svm["val_score"])
        assert m_audio["history"][0]["epoch"] == 0 and sum(m_audio["expert_weights"].values()) == pytest.approx(1)
        assert m_audio["history"][0]["val_ua"] >= max(m_svm["val_score"], m_audio["pooled_val_score"]) - 1e-9
        assert m_audio["val_score"] >= m_audio["history"][0]["val_ua"] - 1e-9
        assert m_audio["audio_experts_weighed_on"] == m_audio["n_val"]


def test_experts_are_weighed_on_cross_fitted_training_scores_too(store, tmp_path):
    """By default the two audio experts are weighed on every training utterance's cross-fitted scores and
    the validation part together, not on the few validation speakers alone."""
    cfg = load_config(None, {**FAST, "features": {"normalise": "speaker"},
                             "train": {**FAST.get("train", {}), "max_epochs": 1}})
    cv_mod.run_cv(store, "audio", cfg, tmp_path / "audio", progress=False, echo=lambda m: None, only=["Ses01"])
    m = json.loads((tmp_path / "audio" / "fold-1" / "metrics.json").read_text())
    assert m["audio_experts_weighed_on"] == m["n_train"] + m["n_val"] > 2 * m["n_val"]
    assert sum(m["expert_weights"].values()) == pytest.approx(1)


def test_linear_checkpoint_reproduces_its_predictions(store, tmp_path):
    import torch

    from mmfer import runs
    from mmfer.data import UtteranceSet
    from mmfer.models.inference import infer

    cfg = load_config(None, {**FAST, "features": {"normalise": "speaker"}})
    cv_mod.run_cv(store, "audio-svm", cfg, tmp_path / "svm", progress=False, echo=lambda m: None)
    model, ckpt = runs.load_checkpoint(tmp_path / "svm" / "fold-2" / "model.pt")
    pred = pd.read_parquet(tmp_path / "svm" / "fold-2" / "predictions.parquet")
    fs = FeatureStore(store)
    norms = fit_normalizers(fs, fs.features["functionals"].ids, ["functionals"], mode="speaker")  # own statistics
    speaker = dict(zip(fs.corpus.table["utt_id"], fs.corpus.table["speaker"]))
    ids = pred["utt_id"].tolist()
    arrays = {"functionals": [norms["functionals"].for_speaker(speaker[u])(fs.features["functionals"].get(u))
                              for u in ids]}
    probs = infer(model, UtteranceSet(ids, None, arrays))["probs"]
    assert np.allclose(probs, np.stack(pred["probs"]), atol=1e-4)
    assert isinstance(ckpt["state_dict"]["linear.weight"], torch.Tensor)


def test_text_tfidf_learns_words_and_predicts_from_a_transcript(tmp_path):
    from mmfer.features.prepare import prepare
    from mmfer.serve.predictor import Predictor

    cue = {"ang": "furious", "hap": "delighted", "neu": "okay", "sad": "miserable"}
    rows = ["id,text,label,speaker"]
    rng = np.random.default_rng(0)
    for s in range(6):
        for i in range(16):
            lab = list(cue)[i % 4]
            filler = " ".join(rng.choice(["we", "went", "to", "the", "shop", "today", "and", "then"], 4))
            rows.append(f"s{s}_{i},{filler} {cue[lab]} {filler},{lab},spk{s}")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    vec = tmp_path / "v.txt"
    vec.write_text("okay 0.1 0.2\nfurious 0.3 0.1\n")
    prepare(tmp_path / "m.csv", tmp_path / "store", lexical=str(vec), progress=False, warn=lambda m: None)
    s = cv_mod.run_cv(tmp_path / "store", "text-tfidf", load_config(None, FAST), tmp_path / "run",
                      progress=False, echo=lambda m: None)
    assert s["ua"]["mean"] > 0.75 and s["protocol"] == "kfold-speaker"  # chance: 0.25
    res = Predictor(tmp_path / "run").predict(None, "so today I am absolutely furious")
    assert res["emotion"] == "ang" and res["model"] == "text-tfidf"


def test_one_class_training_part_is_refused_and_missing_test_class_warned(tmp_path):
    rows = ["id,text,label,speaker"] + [f"u{i},hello there,{'ang' if i < 15 else 'sad'},s{i // 5}"
                                        for i in range(20)]
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    vec = tmp_path / "v.txt"
    vec.write_text("hello 0.1 0.2\nthere 0.3 0.1\n")
    from mmfer.features.prepare import prepare

    prepare(tmp_path / "m.csv", tmp_path / "store", lexical=str(vec), progress=False, warn=lambda m: None)
    cfg = load_config(None, {**FAST, "train": {**FAST["train"], "folds": 4, "val_speakers": 1}})
    with warnings.catch_warnings(record=True) as caught, pytest.raises(MmferError, match="1 class"):
        warnings.simplefilter("always")
        cv_mod.run_cv(tmp_path / "store", "text-tfidf", cfg, tmp_path / "run", progress=False, echo=lambda m: None)
    assert any("has no" in str(w.message) for w in caught)


def test_weighted_f1_equals_scikit_learn():
    from sklearn.metrics import f1_score

    from mmfer.training.metrics import scores

    rng = np.random.default_rng(1)
    y, p = rng.integers(0, 5, 300), rng.integers(0, 5, 300)
    p[:100] = y[:100]
    assert scores(y, p, 5)["wf1"] == pytest.approx(f1_score(y, p, average="weighted"))


def test_unicode_words_and_manifest_dialogue_columns(tmp_path):
    assert words_of("Café naïve straße, let’s go?!") == ["café", "naïve", "straße", "let's", "go", "?!"]
    assert words_of("שָׁלוֹם עוֹלָם") == ["שָׁלוֹם", "עוֹלָם"] and words_of("مرحبا") == ["مرحبا"]
    assert words_of("你好") == ["你好"]
    p = tmp_path / "m.csv"
    p.write_text("id,text,label,speaker,dialogue,turn,start,split\n"
                 'a,Hi!,neu,s1,d1,1,"00:16:16,059",train\n'
                 "b,Bye,sad,s2,d1,0,1.5,dev\n"
                 "c,Hm,sad,s2,d1,x,1.5,test\n"
                 "d,Oh,sad,s2,d1,2,1.5,holdout\n")
    c = read_corpus(p)
    t = c.table.set_index("utt_id")
    assert t.loc["a", "start"] == pytest.approx(16 * 60 + 16.059) and t.loc["b", "turn"] == 0
    assert t.loc["a", "split"] == "train" and t.loc["b", "split"] == "dev" and t.loc["a", "dialog"] == "d1"
    assert c.has("dialogues") and c.has("splits") and c.dropped["bad_row"] == 2
    assert any(":4:" in x and "turn/start/end" in x for x in c.problems)
    assert any(":5:" in x and "holdout" in x for x in c.problems)


def test_cv_command_takes_protocol_and_objective(store, tmp_path):
    from typer.testing import CliRunner

    from mmfer.cli import app

    res = CliRunner().invoke(app, ["cv", str(store), "--model", "audio-svm", "--protocol", "loso-speaker",
                                   "--objective", "wf1", "--out", str(tmp_path / "run")])
    assert res.exit_code == 0, res.output
    s = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert s["protocol"] == "loso-speaker" and len(s["folds"]) == 8 and "weighted-F1" in res.stdout
    m = json.loads((tmp_path / "run" / "fold-1" / "metrics.json").read_text())
    assert m["objective"] == "wf1" and "val_wf1" in m["search"][0]
