"""`mmfer compare RUN_A RUN_B`: is A better than B on the same test utterances, and by how much?

Four views of one question, because each answers a different doubt:

* **paired bootstrap** of the difference in WA, UA, macro-F1 and weighted F1 (and each class's recall):
  both runs scored on the same resamples of test speakers and their utterances, so the interval is that of
  the *difference*, much narrower than two overlapping intervals suggest;
* a **sign-flip permutation test over folds**: does A win fold after fold (coarse: 5 folds cannot go
  below p = 0.0625);
* **McNemar** on utterance correctness: only utterances where exactly one run is right count;
* the **per-class recall** differences: where the gain comes from.

Runs tested on different utterances are refused: a difference between two partitions is not a difference
between two models.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from mmfer.errors import MmferError
from mmfer.runs import Run
from mmfer.uncertainty import LEVEL, METRICS, N_BOOT, by_seed, confusion_of, mcnemar, paired, scores_of, sign_flip

NAMES = {"wa": "WA", "ua": "UA", "f1": "macro-F1", "wf1": "weighted-F1"}


def label(run: Run) -> str:
    """A run's name in tables: its model, and its folder where that says more."""
    return run.name if run.path.name == run.name else f"{run.name} ({run.path.name})"


def same_tests(a: Run, b: Run) -> str | None:
    """None when the two runs were tested on the same utterances, else why not (one line)."""
    if list(a.classes) != list(b.classes):
        return f"{label(a)} and {label(b)} have different classes ({', '.join(a.classes)} / {', '.join(b.classes)})"
    ua, ub = set(a.predictions["utt_id"]), set(b.predictions["utt_id"])
    if ua != ub:
        return (f"{a.path} and {b.path} were tested on different utterances ({len(ua - ub)} only in the first, "
                f"{len(ub - ua)} only in the second): compare runs of the same folds (train the second with "
                f"--folds-file {a.path / 'folds.json'})")
    return None


def _speakers(run: Run, ids: list[str]) -> tuple[list[str], str]:
    """Each test utterance's speaker (the bootstrap's groups), from the predictions or the run's store."""
    p = run.predictions.drop_duplicates("utt_id").set_index("utt_id")
    if "speaker" in p and p["speaker"].notna().all():
        return [str(s) for s in p.loc[ids, "speaker"]], "speakers, then utterances within them"
    store = Path(run.provenance.get("store", ""))
    if (store / "corpus.parquet").is_file():
        from mmfer.corpora import load

        t = load(store / "corpus.parquet").table
        spk = dict(zip(t["utt_id"], t["speaker"].astype(str)))
        if all(u in spk for u in ids):
            return [spk[u] for u in ids], "speakers, then utterances within them"
    return ids, "utterances (no speaker information in the run or its store)"


def _fold_scores(run: Run, classes: list[str]) -> dict[str, dict[str, float]]:
    """{fold: {metric: mean over the run's seeds}} from its test predictions."""
    index = {c: i for i, c in enumerate(classes)}
    out: dict[str, dict[str, float]] = {}
    p = run.predictions.assign(seed=run.predictions["seed"].astype(object).where(run.predictions["seed"].notna(),
                                                                                  -1))
    for fold, part in p.groupby("fold", sort=False):
        per_seed = [scores_of(confusion_of([index[c] for c in s["true"]], [index[c] for c in s["pred"]],
                                           len(classes))) for _, s in part.groupby("seed", sort=False)]
        out[str(fold)] = {m: float(np.mean([s[m] for s in per_seed])) for m in METRICS}
    return out


def _ensemble_right(run: Run, ids: list[str], classes: list[str]) -> np.ndarray:
    """Whether the run's seed ensemble (mean probabilities) gets each utterance right."""
    p = run.predictions
    probs = p.groupby("utt_id", sort=False)["probs"].apply(lambda s: np.mean(np.stack(s.to_list()), axis=0))
    truth = p.drop_duplicates("utt_id").set_index("utt_id")["true"]
    index = {c: i for i, c in enumerate(classes)}
    return np.array([int(np.argmax(probs[u])) == index[truth[u]] for u in ids])


def compare(run_a: str | Path, run_b: str | Path, n_boot: int = N_BOOT, level: float = LEVEL, seed: int = 0) -> dict:
    """Everything `mmfer compare` prints, as a dict (``--json``); A - B throughout."""
    a, b = Run(Path(run_a)), Run(Path(run_b))
    why = same_tests(a, b)
    if why:
        raise MmferError(why)
    classes = list(a.classes)
    y, preds_a, ids = by_seed(a.predictions, classes)
    yb, preds_b, ids_b = by_seed(b.predictions, classes)
    order = {u: i for i, u in enumerate(ids_b)}
    take = np.array([order[u] for u in ids])
    if not np.array_equal(y, yb[take]):
        raise MmferError(f"{a.path} and {b.path} give the same utterances different true labels: they were made from "
                         "different label sets")
    preds_b = [p[take] for p in preds_b]
    groups, resampled = _speakers(a, ids)
    result = paired(y, preds_a, preds_b, groups, len(classes), n_boot, level, seed)
    fa, fb = _fold_scores(a, classes), _fold_scores(b, classes)
    common = [f for f in fa if f in fb]
    folds = {"names": common,
             **{m: {"diff": [fa[f][m] - fb[f][m] for f in common],
                    "p": sign_flip([fa[f][m] - fb[f][m] for f in common]) if len(common) > 1 else None}
                for m in METRICS}}
    return {"a": label(a), "b": label(b), "a_path": str(a.path), "b_path": str(b.path), "classes": classes,
            "utterances": len(ids), "speakers": len(set(groups)), "resampled": resampled,
            "seeds": [len(preds_a), len(preds_b)], "level": level, "n_boot": n_boot, "seed": seed,
            "metrics": {m: result[m] for m in METRICS}, "recall": result["recall"], "folds": folds,
            "mcnemar": mcnemar(_ensemble_right(a, ids, classes), _ensemble_right(b, ids, classes))}


def _p(p: float | None) -> str:
    if p is None:
        return "n/a"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def _iv(d: dict) -> str:
    return f"[{100 * d['low']:+.1f}, {100 * d['high']:+.1f}]"


def format_compare(r: dict) -> str:
    """The terminal table of a comparison (percentage points)."""
    pct = int(round(100 * r["level"]))
    lines = [f"A = {r['a']}   B = {r['b']}",
             f"{r['utterances']} test utterances of {r['speakers']} speakers; seeds: A {r['seeds'][0]}, "
             f"B {r['seeds'][1]}; "
             f"{r['n_boot']} paired bootstrap resamples of {r['resampled']}", "",
             f"{'metric':<12} {'A':>6} {'B':>6} {'A - B':>7} {f'{pct} % interval':>18} {'p (bootstrap)':>14} "
             f"{'p (folds)':>10}", "-" * 80]
    for m in METRICS:
        d = r["metrics"][m]
        pf = r["folds"][m]["p"]
        lines.append(f"{NAMES[m]:<12} {100 * d['a']:6.1f} {100 * d['b']:6.1f} {100 * d['diff']:+7.1f} "
                     f"{_iv(d):>18} {_p(d['p']):>14} {_p(pf):>10}")
    mc = r["mcnemar"]
    lines += ["", f"McNemar (seed ensembles): A right and B wrong on {mc['a_only']} utterances, the reverse on "
                  f"{mc['b_only']}: p {_p(mc['p'])}",
              f"per-fold sign-flip test over {len(r['folds']['names'])} folds "
              f"(UA differences: {', '.join(f'{100 * x:+.1f}' for x in r['folds']['ua']['diff'])})", "",
              f"{'class':<12} {'recall A':>9} {'recall B':>9} {'A - B':>7} {f'{pct} % interval':>18}", "-" * 60]
    for c, d in zip(r["classes"], r["recall"]):
        lines.append(f"{c:<12} {100 * d['a']:9.1f} {100 * d['b']:9.1f} {100 * d['diff']:+7.1f} "
                     f"{_iv(d):>18}")
    return "\n".join(lines)


def against_baseline(runs: list[Run], n_boot: int = N_BOOT) -> tuple[str, list[dict]] | None:
    """For a report of several runs on the same test utterances: the best baseline (highest pooled UA among
    the registry's baselines) and every other run's comparison against it; None when there is none."""
    from mmfer.models.registry import MODELS

    base = [r for r in runs if r.name in MODELS and MODELS[r.name].family == "linear"]
    if not base or len(runs) < 2:
        return None
    best = max(base, key=lambda r: (r.summary.get("intervals") or {}).get("ua", {}).get("value",
                                                                                         r.summary["ua"]["mean"]))
    rows = [compare(r.path, best.path, n_boot) for r in runs if r is not best and same_tests(r, best) is None]
    return (label(best), rows) if rows else None


def frame(rows: list[dict]) -> pd.DataFrame:
    """One row per comparison: each metric's difference and interval (percentage points)."""
    out = []
    for r in rows:
        row = {"model": r["a"]}
        for m in METRICS:
            d = r["metrics"][m]
            row[m] = (100 * d["diff"], 100 * d["low"], 100 * d["high"], d["p"])
        out.append(row)
    return pd.DataFrame(out)
