"""Real-data benchmark: every model and baseline on the two real development corpora in ../shared/data,
on the same folds, with per-fold wall time. Writes benchmarks/results/real.json; `--table` prints the
README's "Real data" table from that file.

    python benchmarks/real.py [--data ../shared/data] [--work DIR] [--only ravdess|meld] [--out FILE]
    python benchmarks/real.py --table [--out FILE]
    python benchmarks/real.py --only ravdess --feature whisper_trim=40 --work /tmp/mmfer-trim --out FILE

``--feature KEY=VALUE`` (repeatable) changes a ``features`` setting for every store and row of the run
(recorded in the results' ``features``): a whole table under another setting, kept beside the default one.

* RAVDESS (audio, 8 classes): kfold-speaker, 6 folds of 4 actors (A01-04, A05-08, ...), UA headline.
* MELD (text, 7 classes): the official split (train / dev chooses the epoch / test), weighted F1 headline.

Each row also carries the headline metric of all test predictions pooled, with its 95 % interval (a
bootstrap over test speakers, then their utterances; summary.json's ``intervals``); a second table
gives `mmfer compare` of each default model against the best baseline of its corpus.

Defaults are the package's defaults (configs/default.yaml); the ablation rows change one setting each.
Nothing here was fitted on a test fold: C and epochs are chosen on the validation speakers (RAVDESS) or
on dev (MELD).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # benchmarks/opensmile_calls.py's cpu_name

# (corpus, row name, model, config overrides, note)
RUNS = [
    ("ravdess", "audio-svm", "audio-svm", {}, "baseline: ComParE functionals + linear model"),
    ("ravdess", "audio-whisper-linear", "audio-whisper-linear", {},
     "baseline: Whisper-base frame mean+std per layer + linear model"),
    ("ravdess", "audio", "audio", {}, "default: Whisper frames (BLSTM + attention) + both experts' scores"),
    ("ravdess", "audio, any validation gain", "audio", {"train": {"experts_margin": 0.0}},
     "ablation: the network replaces the experts on any validation gain (train.experts_margin 0)"),
    ("ravdess", "audio, experts weighed on validation", "audio", {"train": {"weigh_experts_on": "validation"}},
     "ablation: the two experts weighed on the validation actors alone (train.weigh_experts_on validation)"),
    ("ravdess-2emo", "audio-svm, training statistics", "audio-svm", {"features": {"normalise": "corpus"}},
     "baseline: functionals + linear model, training-part statistics"),
    ("ravdess-2emo", "audio-whisper-linear, training statistics", "audio-whisper-linear",
     {"features": {"normalise": "corpus"}}, "baseline: Whisper vector + linear model, training-part statistics"),
    ("ravdess-2emo", "audio-svm, speaker statistics", "audio-svm", {"features": {"normalise": "speaker"}},
     "ablation: per-speaker statistics always (the earlier default)"),
    ("ravdess-2emo", "audio", "audio", {}, "default (training labels, then validation, choose the normalisation)"),
    ("ravdess-2emo", "audio, validation always votes", "audio", {"features": {"label_mix_max": 1.0}},
     "ablation: per-speaker or training statistics by validation alone (features.label_mix_max 1)"),
    ("ravdess-2emo", "audio, any validation gain", "audio", {"train": {"experts_margin": 0.0}},
     "ablation: the network replaces the experts on any validation gain (train.experts_margin 0)"),
    ("ravdess-2emo", "audio, experts weighed on validation", "audio",
     {"train": {"weigh_experts_on": "validation"}},
     "ablation: the two experts weighed on the validation actors alone (train.weigh_experts_on validation)"),
    ("ravdess-2emo", "audio, all three", "audio",
     {"features": {"label_mix_max": 1.0}, "train": {"experts_margin": 0.0, "weigh_experts_on": "validation"}},
     "ablation: all three of the above (the earlier default)"),
    # ablations on the full RAVDESS store, run with --only ravdess-options (each about 15 minutes on 2 cores)
    ("ravdess-options", "audio, ComParE LLD frames", "audio", {"features": {"acoustic": "compare"}},
     "ablation: the seed's frames (openSMILE LLDs) instead of Whisper's"),
    ("ravdess-options", "audio-frames", "audio-frames", {}, "ablation: Whisper frames only (BLSTM + attention)"),
    ("meld", "text-tfidf", "text-tfidf", {}, "baseline: TF-IDF 1-2-grams + logistic regression"),
    ("meld", "text", "text", {}, "default: word focus + closed-form sentence scores + previous 3 utterances"),
    ("meld", "text, no epoch soup", "text", {"train": {"soup": 1}},
     "ablation: the best epoch's weights alone (train.soup 1, the earlier default)"),
    ("meld", "text-words", "text-words", {}, "ablation: the utterance's words only (BLSTM + attention)"),
    ("meld", "text, +3 following utterances", "text", {"features": {"context_after": 3}},
     "ablation: context also from the next 3 utterances (offline use only)"),
    ("meld", "text, objective UA", "text", {"train": {"objective": "ua"}},
     "ablation: class-weighted loss, epochs chosen on dev UA (the package default)"),
]
RAVDESS = {"manifest": "ravdess/manifest.csv", "streams": "acoustic,functionals,pooled",
           "train": {"protocol": "kfold-speaker", "folds": 6}, "headline": "ua"}
CORPORA = {
    "ravdess": RAVDESS,
    # each actor keeps two of the eight emotions (actor i, from 0: emotions i mod 8 and (i + 3) mod 8, so
    # every emotion stays with 6 actors): speakers who do not show every emotion, as in harvested speech
    "ravdess-2emo": {**RAVDESS, "subset": "two_emotions"},
    "ravdess-options": {**RAVDESS, "store": "ravdess"},
    # MELD is scored by weighted F1: its rows optimise that (train.objective=wf1: unweighted loss, epochs and
    # C chosen on dev wF1), the same setting for the baseline and every model.
    "meld": {"manifest": "meld/manifest.csv", "streams": "lexical", "train": {"protocol": "split", "objective": "wf1"},
             "headline": "wf1"},
}
EMOTIONS = ["neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised"]


def two_emotions(manifest: Path, out: Path) -> Path:
    """The RAVDESS manifest with each actor's utterances of two emotions only (absolute audio paths)."""
    import pandas as pd

    m = pd.read_csv(manifest)
    actors = sorted(m["speaker"].unique())
    keep = {a: {EMOTIONS[i % 8], EMOTIONS[(i + 3) % 8]} for i, a in enumerate(actors)}
    m = m[[lab in keep[a] for a, lab in zip(m["speaker"], m["label"])]].copy()
    m["audio"] = [str((manifest.parent / a).resolve()) for a in m["audio"]]
    out.parent.mkdir(parents=True, exist_ok=True)
    m.to_csv(out, index=False)
    return out


def prepare_store(data: Path, work: Path, corpus: str, acoustic: str = "whisper", features: dict | None = None
                  ) -> Path:
    from mmfer.config import FeatureConfig
    from mmfer.features.prepare import prepare

    c = CORPORA[corpus]
    store = work / f"{c.get('store', corpus)}-store"
    manifest = data / c["manifest"]
    if c.get("subset") == "two_emotions":
        manifest = two_emotions(manifest, work / f"{corpus}.csv")
    t = time.perf_counter()
    prepare(manifest, store, features=FeatureConfig(**{**(features or {}), "streams": c["streams"].split(","),
                                                       "acoustic": acoustic}),
            progress=False, warn=lambda m: None)
    print(f"{corpus}: store ready in {time.perf_counter() - t:.0f} s", flush=True)
    return store


def run(data: Path, work: Path, only: str | None, features: dict | None = None) -> list[dict]:
    from mmfer.config import load_config
    from mmfer.training.cv import run_cv

    rows = []
    stores: dict[str, Path] = {}
    for corpus, name, model, overrides, note in RUNS:
        if only and corpus not in only:
            continue
        if corpus not in stores:
            stores[corpus] = prepare_store(data, work, corpus, features=features)
        # other frames: the same store, their folder added (the others are reused) and made current
        prepare_store(data, work, corpus, overrides.get("features", {}).get("acoustic", "whisper"), features)
        ov = {k: dict(v) for k, v in overrides.items()}
        ov["features"] = {**(features or {}), **ov.get("features", {})}
        ov["train"] = {**CORPORA[corpus]["train"], "threads": 2, **ov.get("train", {})}
        cfg = load_config(None, ov)
        t = time.perf_counter()
        out = run_dir(work, corpus, name)
        s = run_cv(stores[corpus], model, cfg, out, progress=False, echo=lambda m: print("  " + m, flush=True))
        rows.append({"corpus": corpus, "row": name, "model": model, "overrides": overrides, "note": note,
                     "protocol": s["protocol"], "folds": len(s["folds"]), "classes": s["classes"],
                     **{k: s[k] for k in ("wa", "ua", "f1", "wf1", "seconds_per_fold")},
                     "intervals": s.get("intervals"), "headline": CORPORA[corpus]["headline"],
                     "machine": machine(), "date": time.strftime("%Y-%m-%d"),
                     "wall_seconds": round(time.perf_counter() - t, 1)})
        print(f"{corpus:8} {name:36} UA {s['ua']['mean']:.3f}  wF1 {s['wf1']['mean']:.3f}  "
              f"{s['seconds_per_fold']['mean']:.0f} s/fold", flush=True)
    return rows


def machine() -> str:
    """The CPU and whether it computes bfloat16 natively (the Whisper encoder's precision follows it): rows
    kept from an earlier run may come from another machine."""
    from mmfer.features.whisper import native_bfloat16
    from opensmile_calls import cpu_name

    return f"{cpu_name()}, {'native' if native_bfloat16() else 'no native'} bfloat16"


def run_dir(work: Path, corpus: str, name: str) -> Path:
    return work / "runs" / corpus / name.replace(" ", "_").replace(",", "")


# (corpus, default model row, baseline rows): each default against the best of its baselines
VERSUS = [("ravdess", "audio", ("audio-svm", "audio-whisper-linear")),
          ("ravdess-2emo", "audio", ("audio-svm, training statistics", "audio-whisper-linear, training statistics",
                                     "audio-svm, speaker statistics")),
          ("meld", "text", ("text-tfidf",))]


def comparisons(rows: list[dict], work: Path) -> list[dict]:
    """`mmfer compare` of each corpus's default model against its best baseline (by the pooled headline)."""
    from mmfer.analysis.compare import compare

    found = {(r["corpus"], r["row"]): r for r in rows}
    out = []
    for corpus, model, baselines in VERSUS:
        have = [b for b in baselines if (corpus, b) in found]
        if (corpus, model) not in found or not have:
            continue
        head = found[(corpus, model)]["headline"]
        best = max(have, key=lambda b: found[(corpus, b)]["intervals"][head]["value"])
        r = compare(run_dir(work, corpus, model), run_dir(work, corpus, best))
        out.append({"corpus": corpus, "a": model, "b": best, "headline": head, "metrics": r["metrics"],
                    "mcnemar": r["mcnemar"], "fold_p": r["folds"][head]["p"], "speakers": r["speakers"],
                    "utterances": r["utterances"]})
    return out


def comparison_table(results: dict) -> str:
    lines = ["| corpus | A | B (best baseline) | headline A − B [95 %] | p (bootstrap) | p (folds) | McNemar p |",
             "|---|---|---|---|---|---|---|"]
    for c in results.get("comparisons", []):
        d = c["metrics"][c["headline"]]
        fold_p = "n/a (one split)" if c["fold_p"] is None else f"{c['fold_p']:.3f}"
        lines.append(f"| {c['corpus']} | {c['a']} | {c['b']} | {c['headline'].upper()} {100 * d['diff']:+.1f} "
                     f"[{100 * d['low']:+.1f}, {100 * d['high']:+.1f}] | {d['p']:.3f} | {fold_p} | "
                     f"{c['mcnemar']['p']:.3f} |")
    return "\n".join(lines)


def _order(row: dict) -> int:
    names = [(c, n) for c, n, *_ in RUNS]
    return names.index((row["corpus"], row["row"])) if (row["corpus"], row["row"]) in names else len(names)


def table(results: dict) -> str:
    lines = ["| corpus | model | protocol | WA | UA | macro-F1 | weighted-F1 | headline, pooled [95 %] | s/fold "
             "| what |", "|---|---|---|---|---|---|---|---|---|---|"]

    def cell(r: dict, k: str) -> str:
        m = f"{100 * r[k]['mean']:.1f}"
        return m + (f" ± {100 * r[k]['std']:.1f}" if r["folds"] > 1 else "")

    def pooled(r: dict) -> str:
        iv = (r.get("intervals") or {}).get(r.get("headline", "ua"))
        if not iv:
            return ""
        name = {"ua": "UA", "wf1": "wF1"}.get(r.get("headline", "ua"), r.get("headline"))
        return f"{name} {100 * iv['value']:.1f} [{100 * iv['low']:.1f}, {100 * iv['high']:.1f}]"

    for r in results["rows"]:
        proto = f"{r['protocol']} ({r['folds']} folds)" if r["folds"] > 1 else "official split, test"
        lines.append(f"| {r['corpus']} | {r['row']} | {proto} | {cell(r, 'wa')} | {cell(r, 'ua')} | {cell(r, 'f1')} | "
                     f"{cell(r, 'wf1')} | {pooled(r)} | {r['seconds_per_fold']['mean']:.0f} | {r['note']} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=HERE.parent.parent / "shared" / "data")
    ap.add_argument("--work", type=Path, default=Path("/tmp/mmfer-real"))
    ap.add_argument("--only", choices=sorted(CORPORA), action="append", help="corpora to run (repeatable)")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "real.json")
    ap.add_argument("--table", action="store_true", help="print the README table from --out and exit")
    ap.add_argument("--feature", action="append", default=[], metavar="KEY=VALUE",
                    help="a features setting for the whole run (repeatable), e.g. whisper_trim=40")
    a = ap.parse_args()
    import yaml

    features = {}
    for kv in a.feature:
        key, sep, value = kv.partition("=")
        if not sep:
            raise SystemExit(f"--feature {kv}: expected KEY=VALUE, e.g. whisper_trim=40")
        features[key.strip()] = yaml.safe_load(value)
    if a.table:
        results = json.loads(a.out.read_text())
        print(table(results) + "\n\n" + comparison_table(results))
        return
    if not (a.data / "ravdess" / "manifest.csv").is_file():
        raise SystemExit(f"real data not found under {a.data} (expected ravdess/ and meld/ manifests)")
    import torch

    rows = run(a.data.resolve(), a.work, a.only, features)
    old = json.loads(a.out.read_text())["rows"] if a.out.is_file() else []
    keep = [r for r in old if a.only and r["corpus"] not in a.only]
    all_rows = sorted(keep + rows, key=_order)
    ran = {r["corpus"] for r in rows}  # corpora not run now keep their rows and their comparisons
    kept = [c for c in (json.loads(a.out.read_text()).get("comparisons", []) if a.out.is_file() else [])
            if c["corpus"] not in ran]
    fresh = comparisons([r for r in rows if r.get("intervals")], a.work)
    results = {"machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}",
               "date": time.strftime("%Y-%m-%d"), "features": features, "rows": all_rows,
               "comparisons": sorted(kept + fresh, key=lambda c: [v[0] for v in VERSUS].index(c["corpus"]))}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results) + "\n\n" + comparison_table(results))


if __name__ == "__main__":
    main()
