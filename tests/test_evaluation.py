"""Evaluation a reviewer trusts: bootstrap intervals, paired comparisons, seeds and fold files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from mmfer import runs
from mmfer import uncertainty as unc
from mmfer.analysis.compare import compare
from mmfer.cli import app
from mmfer.config import MmferConfig, load_config
from mmfer.errors import MmferError
from mmfer.features.store import FeatureStore
from mmfer.training.cv import run_cv, summarize
from mmfer.training.fold_files import read_folds_file
from mmfer.training.folds import make_folds
from mmfer.training.metrics import scores
from synthetic_store import CLASSES, make_store

LINEAR = {"train": {"threads": 1}}


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return make_store(tmp_path_factory.mktemp("ev") / "store", kinds=("functionals", "pooled"))


def fake_run(path: Path, truth: pd.DataFrame, pred: list[str], model: str = "audio", seed_of=None) -> Path:
    """A finished run folder written through mmfer.runs from given predictions (no training)."""
    path.mkdir(parents=True)
    runs.write_config(path, MmferConfig().model_dump(), {"model": model, "store": "", "features": {}})
    truth = truth.assign(pred=pred, probs=[[float(c == p) for c in CLASSES] for p in pred])
    metrics = []
    for i, (fold, part) in enumerate(truth.groupby("fold", sort=False)):
        y = [CLASSES.index(c) for c in part["true"]]
        m = {"fold": fold, "test": fold, "n_test": len(part), "best_epoch": 0, "seconds": 1.0,
             **scores(y, [CLASSES.index(c) for c in part["pred"]], len(CLASSES))}
        runs.write_fold(path, i, part.assign(gate=None), m)
        metrics.append(m)
    runs.write_summary(path, summarize(model, CLASSES, metrics, "loso-session"))
    return path


@pytest.fixture(scope="module")
def truth() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = [{"utt_id": f"s{s}_u{u}", "fold": f"f{s // 2}", "speaker": f"s{s}", "true": CLASSES[rng.integers(4)]}
            for s in range(10) for u in range(30)]
    return pd.DataFrame(rows)


def test_interval_of_an_always_right_model_is_one(truth):
    y = np.array([CLASSES.index(c) for c in truth["true"]])
    iv = unc.intervals(y, [y], truth["speaker"], len(CLASSES), n_boot=200)
    for m in unc.METRICS:
        assert iv[m]["value"] == 1.0 and (iv[m]["low"], iv[m]["high"]) == (1.0, 1.0)


def test_speaker_bootstrap_keeps_speaker_variation(truth):
    """One speaker always right, the others at chance: resampling speakers widens the interval beyond an
    utterance bootstrap's, and the resampled counts keep each speaker's utterances together."""
    y = np.array([CLASSES.index(c) for c in truth["true"]])
    rng = np.random.default_rng(1)
    pred = np.where(truth["speaker"].isin(["s0", "s1", "s2"]), y, rng.integers(0, 4, len(y)))
    by_spk = unc.intervals(y, [pred], truth["speaker"], 4, n_boot=500)
    by_utt = unc.intervals(y, [pred], truth["utt_id"], 4, n_boot=500)
    assert by_spk["wa"]["high"] - by_spk["wa"]["low"] > 1.5 * (by_utt["wa"]["high"] - by_utt["wa"]["low"])
    counts = unc.resample_counts(truth["speaker"], 50, seed=3)
    assert (counts.sum(1) % 30 == 0).all()  # whole speakers' worth of draws (30 utterances each)
    # a resample's metrics equal training.metrics.scores on the repeated utterances
    idx = np.repeat(np.arange(len(y)), counts[0])
    want = scores(y[idx], pred[idx], 4)
    got = unc.scores_of((counts[:1].astype(np.float32) @ unc._cells(y, pred, 4)).reshape(1, 4, 4))
    assert all(abs(float(got[m][0]) - want[m]) < 1e-6 for m in unc.METRICS)


def test_identical_runs_differ_by_zero_with_p_one(tmp_path, truth):
    rng = np.random.default_rng(2)
    pred = [t if rng.random() < 0.7 else CLASSES[rng.integers(4)] for t in truth["true"]]
    a = fake_run(tmp_path / "a", truth, pred)
    b = fake_run(tmp_path / "b", truth.sample(frac=1, random_state=0).sort_values("fold", kind="stable"),
                 list(pd.Series(pred, index=truth.index).loc[truth.sample(frac=1, random_state=0)
                                                              .sort_values("fold", kind="stable").index]))
    r = compare(a, b, n_boot=300)
    for m in unc.METRICS:
        assert r["metrics"][m]["diff"] == 0 and r["metrics"][m]["p"] == 1.0
        assert r["folds"][m]["p"] == 1.0
    assert r["mcnemar"] == {"a_only": 0, "b_only": 0, "p": 1.0}
    assert all(c["diff"] == 0 for c in r["recall"]) and r["speakers"] == 10


def test_a_run_against_a_shuffled_label_copy_is_significant(tmp_path, truth):
    rng = np.random.default_rng(4)
    pred = [t if rng.random() < 0.8 else CLASSES[rng.integers(4)] for t in truth["true"]]
    a = fake_run(tmp_path / "a", truth, pred)
    b = fake_run(tmp_path / "shuffled", truth, list(rng.permutation(pred)))
    r = compare(a, b, n_boot=500)
    assert r["metrics"]["ua"]["diff"] > 0.4 and r["metrics"]["ua"]["low"] > 0
    assert r["metrics"]["ua"]["p"] < 0.01 and r["mcnemar"]["p"] < 1e-6
    assert r["folds"]["ua"]["p"] == pytest.approx(2 / 2 ** 5)  # every one of 5 folds better: the smallest p
    out = CliRunner().invoke(app, ["compare", str(a), str(b), "--json", "--bootstrap", "200"])
    assert out.exit_code == 0 and json.loads(out.output)["metrics"]["ua"]["diff"] > 0.4
    table = CliRunner().invoke(app, ["compare", str(a), str(b), "--bootstrap", "200"]).output
    assert "McNemar" in table and "UA" in table and "95 % interval" in table


def test_mismatched_test_sets_are_refused_in_one_line(tmp_path, truth):
    a = fake_run(tmp_path / "a", truth, list(truth["true"]))
    part = truth[truth["speaker"] != "s9"]
    b = fake_run(tmp_path / "b", part, list(part["true"]))
    with pytest.raises(MmferError, match="different utterances"):
        compare(a, b)
    out = subprocess.run([sys.executable, "-m", "mmfer", "compare", str(a), str(b)], capture_output=True, text=True)
    assert out.returncode == 2 and out.stdout == "" and len(out.stderr.strip().splitlines()) == 1
    assert out.stderr.startswith("error: ") and "folds.json" in out.stderr


def test_sign_flip_and_mcnemar_by_hand():
    assert unc.sign_flip([0.1, 0.2, 0.3]) == pytest.approx(2 / 8)
    assert unc.sign_flip([0.0, 0.0]) == 1.0
    # 8 discordant, all one way: 2 * 0.5**8
    assert unc.mcnemar([1] * 8 + [1] * 5, [0] * 8 + [1] * 5)["p"] == pytest.approx(2 * 0.5 ** 8)


def test_folds_file_round_trip_and_seeds(store, tmp_path):
    """A run's folds.json reproduces its test sets in another run; --seeds trains each fold per seed."""
    cfg = load_config(None, {"train": {"threads": 1, "protocol": "kfold-speaker", "folds": 4}})
    first = run_cv(store, "audio-svm", cfg, tmp_path / "first", progress=False, echo=lambda m: None)
    saved = json.loads((tmp_path / "first" / runs.FOLDS).read_text())
    assert len(saved["folds"]) == 4 and saved["format"] == "mmfer-folds/1"
    out = CliRunner().invoke(app, ["cv", str(store), "--model", "audio-svm", "--out", str(tmp_path / "again"),
                                   "--folds-file", str(tmp_path / "first"), "--seeds", "0,1"])
    assert out.exit_code == 0, out.output
    again = json.loads((tmp_path / "again" / runs.FOLDS).read_text())
    assert [(f["test"], f["val"], f["train"]) for f in again["folds"]] == \
           [(f["test"], f["val"], f["train"]) for f in saved["folds"]]
    assert sorted(p.name for p in (tmp_path / "again").glob("fold-*")) == sorted(
        f"fold-{i}-seed-{s}" for i in range(1, 5) for s in (0, 1))
    summary = json.loads((tmp_path / "again" / runs.SUMMARY).read_text())
    assert summary["seeds"]["seeds"] == [0, 1] and len(summary["folds"]) == 8
    assert summary["ua"]["mean"] == pytest.approx(first["ua"]["mean"])  # closed form: seeds agree
    iv = summary["intervals"]["ua"]
    assert iv["low"] <= iv["value"] <= iv["high"]
    assert "over seeds" in out.output and "interval" in out.output and "ensemble" in out.output
    assert summary["seeds"]["ensemble"]["ua"]["mean"] == pytest.approx(first["ua"]["mean"])  # agreeing seeds
    # the same test utterances: compare works; every seed's model is in the ensemble, or one seed's
    assert compare(tmp_path / "again", tmp_path / "first", n_boot=200)["metrics"]["ua"]["diff"] == pytest.approx(0)
    assert len(runs.checkpoints(tmp_path / "again")) == 8 and len(runs.checkpoints(tmp_path / "again", seed=1)) == 4
    with pytest.raises(MmferError, match="no seed 7"):
        runs.checkpoints(tmp_path / "again", seed=7)
    exported = runs.export(tmp_path / "again", tmp_path / "export-seed-1", seed=1)
    assert sorted(p.name for p in (exported / "models").glob("*.pt")) == [f"fold-{i}-seed-1.pt" for i in range(1, 5)]
    assert len(runs.checkpoints(runs.export(tmp_path / "again", tmp_path / "export-all"))) == 8


def test_a_seed_ensemble_averages_each_folds_seeds_probabilities(tmp_path):
    """Per fold, the seeds' mean probabilities decide: two seeds each wrong on a different utterance, but
    less sure there than right elsewhere, make an ensemble right on both (UA 1 where each seed has 0.75)."""
    from mmfer.training.cv import pooled_predictions, seed_ensemble

    probs = {0: [[0.9, 0.1], [0.4, 0.6], [0.1, 0.9], [0.2, 0.8]],  # seed 0 wrong on u1
             1: [[0.45, 0.55], [0.9, 0.1], [0.1, 0.9], [0.2, 0.8]]}  # seed 1 wrong on u0
    folds = []
    for seed, p in probs.items():
        frame = pd.DataFrame({"utt_id": ["u0", "u1", "u2", "u3"], "true": ["a", "a", "b", "b"],
                              "pred": ["ab"[int(np.argmax(r))] for r in p], "probs": p})
        runs.write_fold(tmp_path, 0, frame, {"fold": "f1"}, seed)
        folds.append(type("Fold", (), {"index": 0, "seed": seed})())
    ens = seed_ensemble(pooled_predictions(tmp_path, folds), ["a", "b"])
    assert ens["ua"]["mean"] == 1.0 and ens["pooled"]["wa"] == 1.0 and ens["ua"]["std"] == 0.0


def test_resume_refuses_other_folds_and_accepts_older_configs(store, tmp_path):
    cfg = load_config(None, {"train": {"threads": 1, "protocol": "kfold-speaker", "folds": 4}})
    run_cv(store, "audio-svm", cfg, tmp_path / "r", progress=False, echo=lambda m: None)
    # a config written before a field existed still resumes
    old = yaml.safe_load((tmp_path / "r" / runs.CONFIG).read_text())
    del old["train"]["bootstrap"], old["train"]["folds_file"]
    (tmp_path / "r" / runs.CONFIG).write_text(yaml.safe_dump(old))
    run_cv(store, "audio-svm", cfg, tmp_path / "r", progress=False, echo=lambda m: None)
    folds = json.loads((tmp_path / "r" / runs.FOLDS).read_text())
    folds["folds"][0]["test"] = folds["folds"][0]["test"][:-1]
    (tmp_path / "r" / runs.FOLDS).write_text(json.dumps(folds))
    with pytest.raises(MmferError, match="other folds"):
        run_cv(store, "audio-svm", cfg, tmp_path / "r", progress=False, echo=lambda m: None)


def test_resume_reads_a_missing_field_as_what_mmfer_did_before_it(tmp_path):
    """A run made before train.experts_margin existed chose epochs with any validation gain: resuming it under
    today's default (1 standard error) would mix folds trained two ways, so it is refused, naming the field;
    with the earlier value it resumes. A field whose default is the old behaviour (bootstrap) still matches."""
    from mmfer.config import BEFORE_FIELD, MmferConfig

    prov = {"model": "audio", "store": "s", "features": {}}
    old = MmferConfig().model_dump()
    del old["train"]["experts_margin"], old["train"]["bootstrap"]
    (tmp_path / runs.CONFIG).write_text(yaml.safe_dump(old))
    runs.write_json(tmp_path / runs.PROVENANCE, prov)
    with pytest.raises(MmferError, match=r"train\.experts_margin: 0\.0 in the run, 1\.0 now"):
        runs.write_config(tmp_path, MmferConfig().model_dump(), prov)
    earlier = MmferConfig.model_validate({"train": {"experts_margin": 0.0}}).model_dump()
    runs.write_config(tmp_path, earlier, prov)
    assert yaml.safe_load((tmp_path / runs.CONFIG).read_text())["train"]["experts_margin"] == 0.0
    (tmp_path / runs.CONFIG).write_text("train: [unclosed\n")  # damaged: refused in one line, not a traceback
    with pytest.raises(MmferError, match="does not read as an mmfer config"):
        runs.write_config(tmp_path, earlier, prov)
    # every listed field names a real field, and its earlier value is a valid setting other than the default
    for dotted, value in BEFORE_FIELD.items():
        section, field = dotted.split(".")
        default = MmferConfig().model_dump()[section][field]
        assert MmferConfig.model_validate({section: {field: value}}).model_dump()[section][field] == value != default


def test_emobox_partition_is_read_as_published(store, tmp_path):
    """EmoBox's data/<corpus>/fold_K/<corpus>_{train,valid,test}_fold_K.jsonl, keys '<dataset>-<id>'."""
    table = FeatureStore(store).corpus.table
    spk = dict(zip(table["utt_id"], table["speaker"]))
    ids = table["utt_id"].tolist()
    root = tmp_path / "data" / "iemocap"
    for k, test_spk in ((1, {"Ses01F", "Ses01M"}), (2, {"Ses02F", "Ses02M"})):
        d = root / f"fold_{k}"
        d.mkdir(parents=True)
        parts = {"test": [u for u in ids if spk[u] in test_spk], "train": [u for u in ids if spk[u] not in test_spk]}
        if k == 2:  # a published validation part
            parts["valid"] = [u for u in parts["train"] if spk[u] == "Ses04F"]
            parts["train"] = [u for u in parts["train"] if spk[u] != "Ses04F"]
        for part, us in parts.items():
            lines = [json.dumps({"key": f"iemocap-{u}", "dataset": "iemocap", "wav": f"downloads/iemocap/{u}.wav",
                                 "type": "raw", "sample_rate": 16000, "num_frame": 32000.0, "task": "category",
                                 "length": 2.0, "emo": "neu", "channel": 1}) for u in us]
            (d / f"iemocap_{part}_fold_{k}.jsonl").write_text("\n".join(lines) + "\n")
    (root / "iemocap.jsonl").write_text("")  # the corpus-wide listing beside the folds is ignored
    folds, dropped = read_folds_file(root, table, val_speakers=2)
    assert dropped == 0 and [f.name for f in folds] == ["fold_1", "fold_2"]
    assert sorted(folds[0].test_speakers) == ["Ses01F", "Ses01M"] and len(folds[0].val_speakers) == 2
    assert not set(folds[0].val) & set(folds[0].train)
    assert folds[1].val_speakers == ["Ses04F"] and len(folds[1].test) == 32
    assert set(folds[1].train) | set(folds[1].val) | set(folds[1].test) == set(ids)


def test_utterance_to_fold_tables(store, tmp_path):
    table = FeatureStore(store).corpus.table
    by_session = {u: u[:5] for u in table["utt_id"]}
    csv = tmp_path / "folds.csv"
    pd.DataFrame({"utt_id": list(by_session), "fold": list(by_session.values())}).to_csv(csv, index=False)
    folds = make_folds(table, 2, protocol="file", folds_file=str(csv))
    loso = make_folds(table, 2, protocol="loso-session")
    assert [sorted(f.test) for f in folds] == [sorted(f.test) for f in loso]
    assert [f.val_speakers for f in folds] == [f.val_speakers for f in loso]
    mapping = tmp_path / "folds.json"
    mapping.write_text(json.dumps({**by_session, "not-in-store": "Ses01"}))
    warned = []
    assert [sorted(f.test) for f in make_folds(table, 2, protocol="file", folds_file=str(mapping),
                                               warn=warned.append)] == [sorted(f.test) for f in loso]
    assert "1 utterance(s)" in warned[0]
    bad = tmp_path / "bad.csv"
    bad.write_text("utt_id,fold\nSes01F_impro01_F000,Ses01\n,Ses02\n")
    with pytest.raises(MmferError, match=r"bad.csv:3: empty"):
        make_folds(table, 2, protocol="file", folds_file=str(bad))
    none = tmp_path / "none.csv"
    none.write_text("utt_id,fold\nx,1\ny,2\n")
    with pytest.raises(MmferError, match="none of its utterance ids is in the store"):
        make_folds(table, 2, protocol="file", folds_file=str(none))
    with pytest.raises(MmferError, match="needs train.folds_file"):
        make_folds(table, 2, protocol="file")
