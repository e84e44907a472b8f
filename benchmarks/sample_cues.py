"""Where the emotion is, and how far fusion can go: the quickstart's runs scored per cue group of the sample
corpus (issue 25's target "mmmf >= 5 points UA above the best unimodal model"; report honestly).

The sample corpus decides for every ang/hap/sad utterance whether its emotion is in both channels, only in
the voice (neutral wording) or only in the words (flat prosody); `neu` is neutral in both. The plan is
regenerated from the corpus's own settings (``.mmfer-sample.json``: the generator is deterministic), so the
group of each test utterance is known exactly. For each run of `make quickstart`: accuracy per group and UA.
Then two ceilings for a fusion of the two unimodal networks, computed on the same test predictions:

* **selector**: per utterance, the right answer whenever `audio` or `text` has it (an oracle that picks the
  right modality every time; a fusion can beat it only where both are wrong);
* **any unimodal**: right whenever any unimodal run (networks or baselines) is right.

Reads a quickstart folder, writes benchmarks/results/sample_cues.json; ``--table`` prints the markdown.

    python benchmarks/sample_cues.py [--quickstart mmfer-quickstart] [--table]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from opensmile_calls import cpu_name  # noqa: E402  (benchmarks/opensmile_calls.py)

GROUPS = ("both", "audio", "text", "neu", "exc")
GROUP_NAMES = {"both": "both channels", "audio": "voice only", "text": "words only", "neu": "neu",
               "exc": "exc (as hap)"}
UNIMODAL = ("audio", "text", "audio-whisper-linear", "audio-svm", "text-tfidf")


def cue_groups(corpus: Path) -> dict[str, str]:
    """utterance id -> cue group, from the generator's plan for the corpus's recorded settings."""
    from mmfer.corpora.sample.generate import MARKER, VERSION, plan

    settings = json.loads((corpus / MARKER).read_text())["settings"]
    if settings["version"] != VERSION:
        raise SystemExit(f"{corpus} was made by sample corpus version {settings['version']}, this is {VERSION}")
    out = {}
    for p in plan(settings["per_speaker"], settings["seed"]):
        out[p.utt_id] = p.cue if p.label in ("ang", "hap", "sad") else p.label
    return out


def predictions(run: Path) -> pd.DataFrame:
    """The run's test predictions over all folds, one row per utterance (seed 0 only), sorted by id."""
    files = sorted(run.glob("fold-*/predictions.parquet"))
    if not files:
        raise SystemExit(f"{run}: no fold predictions; run `make quickstart` first")
    df = pd.concat([pd.read_parquet(f) for f in files]).set_index("utt_id").sort_index()
    return pd.DataFrame({"true": df["true"].astype(str), "pred": df["pred"].astype(str)}, index=df.index)


def ua(true: np.ndarray, pred: np.ndarray) -> float:
    """UA of label arrays, by mmfer's own metric (``training.metrics.scores``)."""
    from mmfer.training.metrics import scores

    classes = sorted(set(true) | set(pred))
    index = {c: i for i, c in enumerate(classes)}
    return scores([index[c] for c in true], [index[c] for c in pred], len(classes))["ua"]


def measure(quickstart: Path) -> dict:
    groups = cue_groups(quickstart / "corpus")
    runs = {p.name: predictions(p) for p in sorted((quickstart / "runs").iterdir()) if p.is_dir()}
    ids = next(iter(runs.values())).index
    for name, df in runs.items():
        if not df.index.equals(ids):
            raise SystemExit(f"run {name} scored other utterances than the others")
    true = next(iter(runs.values()))["true"].to_numpy()
    group = np.array([groups[i] for i in ids])
    counts = {g: int((group == g).sum()) for g in GROUPS}
    rows = []
    for name, df in runs.items():
        ok = df["pred"].to_numpy() == true
        rows.append({"model": name, "ua": round(100 * ua(true, df["pred"].to_numpy()), 1),
                     "accuracy": {g: round(100 * float(ok[group == g].mean()), 1) for g in GROUPS if counts[g]}})
    ceilings = {}
    if "audio" in runs and "text" in runs:
        a, t = runs["audio"]["pred"].to_numpy(), runs["text"]["pred"].to_numpy()
        chosen = np.where(a == true, a, t)
        ceilings["selector"] = round(100 * ua(true, chosen), 1)
    present = [m for m in UNIMODAL if m in runs]
    right = np.zeros(len(true), bool)
    for m in present:
        right |= runs[m]["pred"].to_numpy() == true
    # wrong answers as some other class: recall, and so UA, only counts the right ones
    other = np.roll(np.unique(true), 1)[np.searchsorted(np.unique(true), true)]
    ceilings["any_unimodal"] = round(100 * ua(true, np.where(right, true, other)), 1)
    best = max((r for r in rows if r["model"] in present), key=lambda r: r["ua"])
    from mmfer.features.whisper import native_bfloat16

    return {"date": time.strftime("%Y-%m-%d"), "machine": cpu_name(), "native_bfloat16": native_bfloat16(),
            "quickstart": str(quickstart), "utterances": len(ids), "groups": counts, "rows": rows,
            "best_unimodal": {"model": best["model"], "ua": best["ua"]}, "ceilings": ceilings,
            "target_ua": round(best["ua"] + 5, 1)}


def table(results: dict) -> str:
    g = [k for k in GROUPS if results["groups"].get(k)]
    head = "| model | UA | " + " | ".join(f"{GROUP_NAMES[k]} ({results['groups'][k]})" for k in g) + " |"
    lines = [head, "|---" * (len(g) + 2) + "|"]
    for r in results["rows"]:
        lines.append(f"| {r['model']} | {r['ua']:.1f} | " + " | ".join(f"{r['accuracy'][k]:.1f}" for k in g) + " |")
    c = results["ceilings"]
    lines.append("")
    lines.append(f"Best unimodal: {results['best_unimodal']['model']} {results['best_unimodal']['ua']:.1f} UA, so the "
                 f"target is {results['target_ua']:.1f}. Ceilings: selector (audio or text right) "
                 f"{c.get('selector', float('nan')):.1f}, any unimodal run right {c['any_unimodal']:.1f}.")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quickstart", type=Path, default=HERE.parent / "mmfer-quickstart")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "sample_cues.json")
    ap.add_argument("--table", action="store_true", help="print the table of the stored results only")
    a = ap.parse_args()
    if a.table:
        print(table(json.loads(a.out.read_text())))
        return
    results = measure(a.quickstart)
    a.out.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))


if __name__ == "__main__":
    main()
