"""Predicting with a model trained on bfloat16 Whisper features, on a CPU without native bfloat16: how slow
emulated bfloat16 is, and what running the encoder in float32 instead (the Predictor's
``whisper_precision='auto'``) changes in the predictions. Writes benchmarks/results/precision_predict.json.

* speed: the bundled Whisper encoder, one thread, ``--n`` utterances, float32 and bfloat16, natively and in a
  child process with oneDNN held to AVX2 (``ONEDNN_MAX_CPU_ISA=AVX2``: what a CPU without AVX-512 BF16 or
  AMX runs);
* agreement (needs native bfloat16 here): the sample corpus prepared with a bfloat16 encoder, the default
  `audio` model trained on one fold, its test utterances predicted with the stored precision and with float32
  (as on a CPU without native bfloat16): labels that agree, probability differences, UA of each.

    python benchmarks/precision_predict.py [--work DIR] [--n 20] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RAVDESS = HERE.parent.parent / "shared" / "data" / "ravdess" / "manifest.csv"


def speed(n: int) -> dict:
    """× real time of the encoder in float32 and bfloat16 here (one thread)."""
    import torch

    from mmfer.corpora import read_corpus
    from mmfer.features.audio import load_audio
    from mmfer.features.whisper import WhisperEncoderFeatures

    torch.set_num_threads(1)
    audio = read_corpus(RAVDESS).table["audio"].tolist()
    signals = [load_audio(a) for a in audio[::max(1, len(audio) // n)][:n]]
    seconds = sum(len(x) for x in signals) / 16000
    out = {}
    for precision in ("float32", "bfloat16"):
        enc = WhisperEncoderFeatures(precision=precision, device="cpu")
        enc.extract(signals[0])
        t = time.perf_counter()
        for x in signals:
            enc.extract(x)
        out[f"{precision}_x_real_time"] = round(seconds / (time.perf_counter() - t), 1)
    return out


def agreement(work: Path) -> dict:
    import numpy as np
    import pandas as pd

    import mmfer.serve.predictor as predictor
    from mmfer import runs
    from mmfer.api import Model
    from mmfer.config import FeatureConfig, load_config
    from mmfer.corpora import read_corpus
    from mmfer.corpora.sample import generate
    from mmfer.features.prepare import prepare
    from mmfer.training.cv import run_cv
    from mmfer.training.metrics import scores

    corpus = work / "corpus"
    if not corpus.is_dir():
        generate(corpus, progress=False)
    store, run = work / "store", work / "runs" / "audio"
    prepare(corpus, store, features=FeatureConfig(streams=["acoustic", "functionals", "pooled"],
                                                  whisper_precision="bfloat16"), progress=False, warn=lambda m: None)
    cfg = load_config(None, {"train": {"threads": 2}})
    run_cv(store, "audio", cfg, run, progress=False, echo=lambda m: None, only=["Ses01"])
    test = runs.fold_predictions(run, 0)
    audio = dict(zip(*(read_corpus(corpus).table[c] for c in ("utt_id", "audio"))))
    out: dict = {"utterances": len(test)}
    probs = {}
    original = predictor._bfloat16_runs_here
    for name, native in (("stored", True), ("float32", False)):
        predictor._bfloat16_runs_here = (lambda v: lambda: v)(native)  # float32: as where bfloat16 is emulated
        model = Model(run, asr="none", fold=1)
        assert model.predictor.trusted_settings("acoustic")["precision"] == ("bfloat16" if native else "float32")
        t = time.perf_counter()
        probs[name] = np.array([[p.probabilities[c] for c in model.classes]
                                for p in (model.predict(audio[u]) for u in test["utt_id"])])
        out[f"{name}_seconds"] = round(time.perf_counter() - t, 1)
        true = [model.classes.index(c) for c in test["true"]]
        out[f"{name}_ua"] = round(scores(true, probs[name].argmax(1), len(model.classes))["ua"], 4)
    predictor._bfloat16_runs_here = original
    a, b = probs["stored"], probs["float32"]
    out["labels_agree"] = round(float(np.mean(a.argmax(1) == b.argmax(1))), 4)
    out["probability_abs_diff_mean"] = round(float(np.abs(a - b).mean()), 5)
    out["probability_abs_diff_max"] = round(float(np.abs(a - b).max()), 4)
    # for scale: the cv fold normalised each test speaker by its own statistics; one utterance predicted alone
    # (no --speaker-audio) has none, which moves more than the precision does
    out["cv_fold_ua"] = round(runs.fold_done(run, 0)["ua"], 4)
    out["cv_fold_normalise"] = runs.fold_done(run, 0)["normalise"]
    out["labels_equal_to_the_cv_fold"] = round(float(np.mean(pd.Series(test["pred"]).to_numpy() ==
                                                             np.array(model.classes)[a.argmax(1)])), 4)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("/tmp/mmfer-precision-predict"))
    ap.add_argument("--n", type=int, default=20, help="RAVDESS utterances for the speed measurement")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "precision_predict.json")
    ap.add_argument("--speed-only", action="store_true", help=argparse.SUPPRESS)  # the child process
    a = ap.parse_args()
    if a.speed_only:
        print(json.dumps(speed(a.n)))
        return
    import torch

    from mmfer.features.whisper import native_bfloat16

    def child(env: dict) -> dict:
        got = subprocess.run([sys.executable, __file__, "--speed-only", "--n", str(a.n)], env={**os.environ, **env},
                             check=True, capture_output=True, text=True)
        return json.loads(got.stdout.strip().splitlines()[-1])

    speeds = {"native": child({}), "oneDNN held to AVX2 (bfloat16 emulated)": child({"ONEDNN_MAX_CPU_ISA": "AVX2"})}
    result = {"machine": f"torch {torch.__version__}", "native_bfloat16": native_bfloat16(),
              "date": time.strftime("%Y-%m-%d"), "speed_one_thread": speeds}
    if native_bfloat16():
        result["agreement_sample_corpus_fold_Ses01"] = agreement(a.work)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
