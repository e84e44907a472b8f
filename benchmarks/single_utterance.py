"""One utterance of a voice the model has no statistics of: what `predict` (and the demo, and a batch speaker
with too few recordings) scores, against the cv that normalised each test speaker by their own statistics.

Per fold of a cv run, every test utterance is predicted alone through the Predictor of that fold's model
(``fold=i``, features taken from the store, which is what the extractors give), three ways:

* ``cv``: the fold's own test score (the test speakers' own statistics; a text model also had the
  preceding transcripts of the dialogue, which are passed here too);
* ``network``: the network with the training statistics (what `predict` did before the fallback);
* ``default``: as `predict` does now: where the fold was trained on per-speaker statistics and its
  validation speakers (with training statistics) preferred them, the closed-form experts fitted on
  training statistics stand in (training.single).

    python benchmarks/single_utterance.py [--work DIR] [--data ../shared/data] [--skip-ravdess] [--out FILE]

Sample corpus: `audio`, `mmmf` and the linear baselines `audio-svm` and `audio-whisper-linear` (whose
fallback is their twin fitted on training statistics), 5 folds; RAVDESS: `audio` and the same baselines,
6 folds (the stores as benchmarks/real.py makes them). Writes benchmarks/results/single_utterance.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
LINEAR = ("audio-svm", "audio-whisper-linear")  # the baselines keep a training-statistics twin likewise


def one_by_one(store_path: Path, run: Path) -> dict:
    """Per fold and overall (pooled over the folds' test utterances): UA of cv, network and default."""
    import numpy as np

    from mmfer import runs
    from mmfer.data import dialogue_order
    from mmfer.features.audio import load_audio
    from mmfer.features.store import FeatureStore
    from mmfer.serve.predictor import Predictor, Request
    from mmfer.training.metrics import scores

    store = FeatureStore(store_path)
    table = store.corpus.table.set_index("utt_id")
    before = {}  # the preceding transcripts of each utterance's dialogue, oldest first (the context stream)
    for ids in dialogue_order(store.corpus.table):
        for j, u in enumerate(ids):
            before[u] = [table.loc[v, "text"] for v in ids[:j]]
    folds, pooled = [], {"true": [], "cv": [], "network": [], "default": []}
    n_folds = len(json.loads((run / "folds.json").read_text())["folds"])
    for i in range(n_folds):
        test = runs.fold_predictions(run, i)
        metrics = runs.fold_done(run, i)
        pred = Predictor(run, fold=i + 1)
        kinds = pred.audio_kinds()
        requests = []
        for u in test["utt_id"]:
            row = table.loc[u]
            audio = {k: store.features[k].get(u) for k in kinds}
            signal = load_audio(row["audio"], start=row["start"] if store.corpus.name == "manifest" else None,
                                end=row["end"] if store.corpus.name == "manifest" else None)
            requests.append(Request(signal, row["text"] if pred.needs_text else None, before.get(u) or None,
                                    audio=audio))
        true = [pred.classes.index(c) for c in test["true"]]
        got = {"cv": [pred.classes.index(c) for c in test["pred"]]}
        fallbacks = pred.fallbacks
        for name, fb in (("network", [None] * len(fallbacks)), ("default", fallbacks)):
            pred.fallbacks = fb
            results = pred.predict_many(requests)
            got[name] = [int(np.argmax(list(r["probabilities"].values()))) for r in results]
        fold = {"fold": metrics["fold"], "normalise": metrics["normalise"],
                **({"single_utterance": metrics["single_utterance"]} if "single_utterance" in metrics else {}),
                **{f"{k}_ua": round(scores(true, v, len(pred.classes))["ua"], 4) for k, v in got.items()}}
        folds.append(fold)
        print(f"  {run.name} {fold}", flush=True)
        pooled["true"] += true
        for k in got:
            pooled[k] += got[k]
    n = len(table["label"].unique())
    return {"folds": folds, "pooled_ua": {k: round(scores(pooled["true"], pooled[k], n)["ua"], 4)
                                          for k in ("cv", "network", "default")},
            "mean_fold_ua": {k: round(float(np.mean([f[f"{k}_ua"] for f in folds])), 4)
                             for k in ("cv", "network", "default")}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/mmfer-single"))
    ap.add_argument("--data", type=Path, default=HERE.parent.parent / "shared" / "data")
    ap.add_argument("--skip-ravdess", action="store_true")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "single_utterance.json")
    a = ap.parse_args()
    import torch

    from mmfer.config import load_config
    from mmfer.corpora.sample import generate
    from mmfer.features.prepare import prepare
    from mmfer.training.cv import run_cv

    result: dict = {"machine": f"torch {torch.__version__}", "date": time.strftime("%Y-%m-%d")}
    corpus, store = a.work / "sample" / "corpus", a.work / "sample" / "store"
    if not corpus.is_dir():
        generate(corpus, progress=False)
    prepare(corpus, store, progress=False, warn=lambda m: None)
    cfg = load_config(None, {"train": {"threads": 2}})
    for model in ("audio", "mmmf", *LINEAR):
        run = a.work / "sample" / "runs" / model
        run_cv(store, model, cfg, run, progress=False, echo=lambda m: None)
        result[f"sample/{model}"] = one_by_one(store, run)
    if not a.skip_ravdess:
        from real import CORPORA, prepare_store

        store = prepare_store(a.data, a.work, "ravdess")
        cfg = load_config(None, {"train": {**CORPORA["ravdess"]["train"], "threads": 2}})
        for model in ("audio", *LINEAR):
            run = a.work / "ravdess" / "runs" / model
            run_cv(store, model, cfg, run, progress=False, echo=lambda m: None)
            result[f"ravdess/{model}"] = one_by_one(store, run)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v.get("pooled_ua") if isinstance(v, dict) else v for k, v in result.items()}, indent=2))


if __name__ == "__main__":
    main()
