"""Options measured before choosing defaults (issue 11): the fusion options of ``mmmf`` on the sample
corpus, and the epoch soup on MELD over three seeds. Writes benchmarks/results/options.json.

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

SAMPLE = [  # (row, model, overrides)
    ("audio", "audio", {}),
    ("text", "text", {}),
    ("mmmf (default)", "mmmf", {}),
    ("mmmf, no epoch soup", "mmmf", {"train": {"soup": 1}}),
    ("mmmf, stack_experts", "mmmf", {"model": {"stack_experts": True}}),
    ("mmmf, stack_experts + aux_weight 0.5", "mmmf", {"model": {"stack_experts": True, "aux_weight": 0.5}}),
    ("mmmf, aux_weight 0.5", "mmmf", {"model": {"aux_weight": 0.5}}),
    ("mmmf, stack_experts + modality_dropout 0.2", "mmmf", {"model": {"stack_experts": True, "modality_dropout": 0.2}}),
    ("mmmf, two-stage init_from audio and text", "mmmf", {"train": {"init_from": "RUNS"}}),
]
RAVDESS = [("audio (functionals learned), no epoch soup", "audio",
            {"model": {"functionals": "learned"}, "train": {"soup": 1, "protocol": "kfold-speaker", "folds": 6}})]
MELD = [(f"text, seed {seed}{', no epoch soup' if soup == 1 else ''}", "text",
         {"train": {"seed": seed, "soup": soup, "protocol": "split", "objective": "wf1"}})
        for soup in (5, 1) for seed in (0, 1, 2)]


def cv_row(store: Path, model: str, overrides: dict, out: Path) -> dict:
    from mmfer.config import load_config
    from mmfer.training.cv import run_cv

    t = time.perf_counter()
    s = run_cv(store, model, load_config(None, overrides), out, progress=False, echo=lambda m: None)
    folds = [json.loads(f.read_text()) for f in sorted(out.glob("fold-*/metrics.json"))]
    val = [f.get("soup_val_score", f["val_score"]) for f in folds]
    return {"model": model, "overrides": overrides, "val": sum(val) / len(val),
            "test_ua": s["ua"]["mean"], "test_ua_std": s["ua"]["std"], "test_wf1": s["wf1"]["mean"],
            "fold_val": val, "fold_test_ua": [f["ua"] for f in folds],
            "soup_epochs": [f.get("soup_epochs") for f in folds], "seconds": round(time.perf_counter() - t, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=HERE.parents[1] / "shared" / "data")
    ap.add_argument("--work", type=Path, default=Path("/tmp/mmfer-options"))
    ap.add_argument("--only", choices=["sample", "meld", "ravdess"])
    ap.add_argument("--out", type=Path, default=HERE / "results" / "options.json")
    a = ap.parse_args()
    result = json.loads(a.out.read_text()) if a.out.is_file() else {}
    if a.only in (None, "sample"):
        from mmfer.config import FeatureConfig
        from mmfer.corpora.sample import generate
        from mmfer.features.prepare import prepare

        corpus = generate(a.work / "sample" / "corpus", per_speaker=60, seed=0)  # as `mmfer quickstart` makes it
        store, runs, rows = a.work / "sample" / "store", a.work / "sample" / "runs", []
        prepare(corpus, store, features=FeatureConfig(), progress=False, warn=lambda m: None)
        for name, model, ov in SAMPLE:
            if ov.get("train", {}).get("init_from") == "RUNS":
                ov = {"train": {"init_from": {"audio": str(runs / "audio"), "text": str(runs / "text")}}}
            out = runs / name.split(" (")[0].replace(" ", "_").replace(",", "").replace("+", "and")
            rows.append({"row": name, **cv_row(store, model, ov, out)})
            r = rows[-1]
            print(f"sample {name:44} val UA {r['val']:.3f}  test UA {r['test_ua']:.3f}  {r['seconds']:.0f} s",
                  flush=True)
        result["sample"] = {"corpus": "embedded sample corpus, 540 utterances, loso-session (5 folds)",
                            "choose_by": "mean validation UA over folds", "rows": rows}
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
