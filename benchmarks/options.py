"""Options measured before choosing defaults (issue 11): the fusion options of ``mmmf`` on the sample
corpus (with test accuracy by where the emotion is: both channels, voice only, words only) and its modality
dropout rate over three seeds, and the epoch soup on MELD over three seeds. Writes
benchmarks/results/options.json.

    python benchmarks/options.py [--data ../shared/data] [--work DIR] [--only sample|meld] [--out FILE]

Choices are made on the validation part only: on the sample corpus the mean over the 5 folds of the
validation speakers' UA (the test sessions' UA is shown, not used), on MELD dev wF1.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

OFF = {"modality_dropout": 0.0}  # the options below were measured before modality dropout became the default
SAMPLE = [  # (row, model, overrides)
    ("audio", "audio", {}),
    ("text", "text", {}),
    ("mmmf (default: modality_dropout 0.5)", "mmmf", {}),
    ("mmmf, no epoch soup", "mmmf", {"train": {"soup": 1}}),
    ("mmmf, no modality dropout", "mmmf", {"model": OFF}),
    ("mmmf, no modality dropout, stack_experts", "mmmf", {"model": {**OFF, "stack_experts": True}}),
    ("mmmf, no modality dropout, stack_experts + aux_weight 0.5", "mmmf",
     {"model": {**OFF, "stack_experts": True, "aux_weight": 0.5}}),
    ("mmmf, no modality dropout, aux_weight 0.5", "mmmf", {"model": {**OFF, "aux_weight": 0.5}}),
    ("mmmf, stack_experts + modality_dropout 0.2", "mmmf", {"model": {"stack_experts": True, "modality_dropout": 0.2}}),
    ("mmmf, no modality dropout, two-stage init_from audio and text", "mmmf", {"train": {"init_from": "RUNS"}}),
]
# modality dropout: the rate is chosen by the mean validation UA over three seeds (one seed's 108 validation
# utterances per fold move by about a point from seed to seed)
SWEEP = [(f"mmmf, modality_dropout {p}, seed {seed}", "mmmf",
          {"model": {"modality_dropout": p}, "train": {"seed": seed}})
         for p in (0.0, 0.3, 0.5, 0.7) for seed in (0, 1, 2)]
RAVDESS = [("audio (functionals learned), no epoch soup", "audio",
            {"model": {"functionals": "learned"}, "train": {"soup": 1, "protocol": "kfold-speaker", "folds": 6}})]
MELD = [(f"text, seed {seed}{', no epoch soup' if soup == 1 else ''}", "text",
         {"train": {"seed": seed, "soup": soup, "protocol": "split", "objective": "wf1"}})
        for soup in (5, 1) for seed in (0, 1, 2)]


def by_cue(out: Path) -> dict[str, float]:
    """Sample corpus: test accuracy by where the emotion is (the generator's plan says it per utterance):
    both channels, voice only (neutral wording), words only (flat prosody), and neutral utterances."""
    import pandas as pd

    from mmfer.corpora.sample.generate import plan

    cue = {p.utt_id: p.cue for p in plan(per_speaker=60, seed=0)}
    pred = pd.concat([pd.read_parquet(f) for f in sorted(out.glob("fold-*/predictions.parquet"))])
    group = [("neutral" if t == "neu" else {"audio": "voice only", "text": "words only"}.get(cue[u], cue[u]))
             for u, t in zip(pred.utt_id, pred.true)]
    hit = pd.Series((pred.true == pred.pred).to_numpy(), index=group)
    return {g: round(float(hit[g].mean()), 4) for g in ("both", "voice only", "words only", "neutral")}


def cv_row(store: Path, model: str, overrides: dict, out: Path, cues: bool = False) -> dict:
    from mmfer.config import load_config
    from mmfer.training.cv import run_cv

    t = time.perf_counter()
    s = run_cv(store, model, load_config(None, overrides), out, progress=False, echo=lambda m: None)
    folds = [json.loads(f.read_text()) for f in sorted(out.glob("fold-*/metrics.json"))]
    val = [f.get("soup_val_score", f["val_score"]) for f in folds]
    return {"model": model, "overrides": overrides, "val": sum(val) / len(val),
            "test_ua": s["ua"]["mean"], "test_ua_std": s["ua"]["std"], "test_wf1": s["wf1"]["mean"],
            "fold_val": val, "fold_test_ua": [f["ua"] for f in folds],
            "soup_epochs": [f.get("soup_epochs") for f in folds], "seconds": round(time.perf_counter() - t, 1),
            **({"test_accuracy_by_cue": by_cue(out)} if cues else {})}


def _mean(xs) -> float:
    xs = list(xs)
    return sum(xs) / len(xs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=HERE.parents[1] / "shared" / "data")
    ap.add_argument("--work", type=Path, default=Path("/tmp/mmfer-options"))
    ap.add_argument("--only", choices=["sample", "meld", "ravdess"])
    ap.add_argument("--out", type=Path, default=HERE / "results" / "options.json")
    a = ap.parse_args()
    result = json.loads(a.out.read_text()) if a.out.is_file() else {}
    if a.only in (None, "sample"):
        from mmfer.config import FeatureConfig, load_config
        from mmfer.corpora.sample import generate
        from mmfer.features.prepare import prepare

        corpus = generate(a.work / "sample" / "corpus", per_speaker=60, seed=0)  # as `mmfer quickstart` makes it
        store, runs, rows = a.work / "sample" / "store", a.work / "sample" / "runs", []
        prepare(corpus, store, features=FeatureConfig(), progress=False, warn=lambda m: None)
        done = {}  # a setting that two rows share (the sweep's seed 0 is a row above) runs once
        for name, model, ov in SAMPLE + SWEEP:
            if ov.get("train", {}).get("init_from") == "RUNS":
                ov = {"model": OFF, "train": {"init_from": {"audio": str(runs / "audio"), "text": str(runs / "text")}}}
            key = json.dumps([model, load_config(None, ov).model_dump(mode="json")], sort_keys=True)
            out = runs / name.split(" (")[0].replace(" ", "_").replace(",", "").replace("+", "and")
            if key not in done:
                done[key] = cv_row(store, model, ov, out, cues=True)
            rows.append({"row": name, **done[key], "overrides": ov})
            r = rows[-1]
            print(f"sample {name:44} val UA {r['val']:.3f}  test UA {r['test_ua']:.3f}  {r['seconds']:.0f} s",
                  flush=True)
        sweep = {}
        for r in rows[len(SAMPLE):]:
            sweep.setdefault(r["overrides"]["model"]["modality_dropout"], []).append(r)
        result["sample"] = {"corpus": "embedded sample corpus, 540 utterances, loso-session (5 folds)",
                            "choose_by": "mean validation UA over folds (modality dropout: and over seeds 0-2)",
                            "rows": rows[:len(SAMPLE)], "modality_dropout_sweep": [
                                {"modality_dropout": p, "val": _mean(r["val"] for r in rs),
                                 "test_ua": _mean(r["test_ua"] for r in rs), "seeds": rs} for p, rs in sweep.items()]}
        for s in result["sample"]["modality_dropout_sweep"]:
            print(f"sample modality_dropout {s['modality_dropout']}: mean val UA {s['val']:.3f}  "
                  f"test UA {s['test_ua']:.3f}", flush=True)
    if a.only in (None, "ravdess"):
        sys.path.insert(0, str(HERE))
        from real import prepare_store

        store, rows = prepare_store(a.data, a.work, "ravdess"), []
        for name, model, ov in RAVDESS:
            rows.append({"row": name, **cv_row(store, model, ov, a.work / "ravdess-runs" / "learned_no_soup")})
            print(f"ravdess {name:44} val UA {rows[-1]['val']:.3f}  test UA {rows[-1]['test_ua']:.3f}", flush=True)
        result["ravdess"] = {"corpus": "RAVDESS audio, kfold-speaker (6 folds of 4 actors)",
                             "choose_by": "mean validation UA over folds", "rows": rows}
    if a.only in (None, "meld"):
        sys.path.insert(0, str(HERE))
        from real import prepare_store

        store, rows = prepare_store(a.data, a.work, "meld"), []  # noqa: F811
        for name, model, ov in MELD:
            out = a.work / "meld-runs" / name.replace(" ", "_").replace(",", "")
            rows.append({"row": name, **cv_row(store, model, ov, out)})
            r = rows[-1]
            print(f"meld {name:30} dev wF1 {r['val']:.3f}  test wF1 {r['test_wf1']:.3f}  {r['seconds']:.0f} s",
                  flush=True)
        result["meld"] = {"corpus": "MELD text, official split", "choose_by": "dev wF1", "rows": rows}
    result["date"] = time.strftime("%Y-%m-%d")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
