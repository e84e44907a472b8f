"""train.finetune_lexical on a GPU (issue 11): MELD text, the official split, the default ``text`` model
with frozen stored MiniLM vectors against the same model whose MiniLM is fine-tuned with it. Both on the
same machine; writes benchmarks/results/finetune.json.

    python benchmarks/finetune.py --manifest ../shared/data/meld/manifest.csv [--lexical FOLDER]
                                  [--work DIR] [--max-utterances N] [--out FILE]

MELD's rows use ``train.objective: wf1`` as in benchmarks/real.py; dev chooses the epoch, test is
reported once. The fine-tuned run stops earlier (max_epochs 8, patience 3): a pretrained encoder peaks
within a few epochs. ``--max-utterances`` (a dialogue-preserving head of each split) is for a smoke run.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

ROWS = [("text (frozen MiniLM)", {}),
        ("text, finetune_lexical", {"train": {"finetune_lexical": True, "max_epochs": 8, "patience": 3}})]


def main() -> None:
    import pandas as pd
    import torch

    from mmfer.config import FeatureConfig, load_config
    from mmfer.features.prepare import prepare
    from mmfer.training.cv import run_cv

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--manifest", type=Path, default=HERE.parents[1] / "shared/data/meld/manifest.csv")
    ap.add_argument("--lexical", default="minilm", help="'minilm' or a local Hugging Face folder")
    ap.add_argument("--work", type=Path, default=Path("/tmp/mmfer-finetune"))
    ap.add_argument("--max-utterances", type=int, default=0)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "finetune.json")
    a = ap.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    manifest = a.manifest
    if a.max_utterances:
        df = pd.read_csv(manifest)
        df = df.groupby("split", group_keys=False).head(a.max_utterances)
        manifest = a.work / "manifest.csv"
        df.to_csv(manifest, index=False)
    t = time.perf_counter()
    store = a.work / "store"
    prepare(manifest, store, features=FeatureConfig(streams=["lexical"], lexical=a.lexical), progress=False,
            warn=lambda m: None)
    prepared = time.perf_counter() - t
    rows = []
    for name, ov in ROWS:
        ov = {k: dict(v) for k, v in ov.items()}
        ov["train"] = {"protocol": "split", "objective": "wf1", **ov.get("train", {})}
        cfg = load_config(None, ov)
        out = a.work / "runs" / ("finetuned" if ov["train"].get("finetune_lexical") else "frozen")
        t = time.perf_counter()
        s = run_cv(store, "text", cfg, out, progress=False, echo=lambda m: print("  " + m, flush=True))
        m = json.loads(next(out.glob("fold*/metrics.json")).read_text())
        rows.append({"row": name, "overrides": ov, "dev_wf1": m["val_score"], "best_epoch": m["best_epoch"],
                     **{k: s[k]["mean"] for k in ("wa", "ua", "f1", "wf1")},
                     "seconds_per_fold": s["seconds_per_fold"]["mean"],
                     "wall_seconds": round(time.perf_counter() - t, 1)})
        print(f"{name:28} dev wF1 {m['val_score']:.3f}  test wF1 {s['wf1']['mean']:.3f}  UA {s['ua']['mean']:.3f}  "
              f"{s['seconds_per_fold']['mean']:.0f} s", flush=True)
    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    result = {"machine": f"{platform.machine()}, {dev}, torch {torch.__version__}", "date": time.strftime("%Y-%m-%d"),
              "manifest": str(a.manifest.name), "max_utterances": a.max_utterances, "lexical": a.lexical,
              "prepare_seconds": round(prepared, 1), "rows": rows}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
