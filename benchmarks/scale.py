"""The growth curve: wall time and peak memory of ``mmfer prepare`` and of ``mmfer cv --model mmmf``, per
utterance, on sample corpora of 540, 2,700 and 5,400 utterances (``--per-speaker`` 54, 270, 540; the last is
IEMOCAP-sized), and of prepare through a two-node Ray cluster on this machine (loopback only), so Ray's
overhead shows. Default settings throughout; each command runs as its own process, and its peak memory is
the largest sum of the resident memory of it and its child processes (sampled every 0.1 s).

    python benchmarks/scale.py [--sizes 54,270,540] [--work DIR] [--out FILE] [--no-ray] [--summarise]

Corpora are synthesised once into --work and reused (synthesis is not timed). Writes
benchmarks/results/scale.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the loopback Ray cluster helper the tests use

IEMOCAP_UTTERANCES = 5531  # the four-class set (exc merged into hap), the size of a leave-one-session-out run
IEMOCAP_MEAN_SECONDS = 4.5  # about 7 hours over those utterances


def _tree_rss(root: int) -> int:
    """Resident bytes of a process and all its descendants."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d.name))
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


def measure(cmd: list[str], env: dict | None = None) -> dict:
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, _tree_rss(proc.pid))
        time.sleep(0.1)
    out = proc.stdout.read()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out[-3000:]}")
    return {"seconds": round(time.perf_counter() - t, 2), "peak_mb": round(peak / 2**20, 1)}


def mmfer(*args) -> list[str]:
    return [sys.executable, "-m", "mmfer", *map(str, args)]


def corpus_facts(store: Path) -> dict:
    import pandas as pd

    t = pd.read_parquet(store / "corpus.parquet")
    seconds = float((t["end"] - t["start"]).sum())
    return {"utterances": len(t), "audio_hours": round(seconds / 3600, 3), "mean_seconds": round(seconds / len(t), 2)}


def cv_facts(run: Path) -> dict:
    """Epochs actually run (early stopping varies with the data) and the training utterance-epochs."""
    folds = sorted(run.glob("fold-*/metrics.json"))
    epochs, utt_epochs = [], 0
    for f in folds:
        m = json.loads(f.read_text())
        n = sum(1 for h in m.get("history", []) if h["epoch"] > 0)
        epochs.append(n)
        utt_epochs += n * m["n_train"]
    summary = json.loads((run / "summary.json").read_text())
    return {"folds": len(folds), "epochs_per_fold": epochs, "train_utterance_epochs": utt_epochs,
            "ua": round(summary["ua"]["mean"], 4)}


def one_size(work: Path, per_speaker: int, ray: bool) -> dict:
    from mmfer.corpora.sample import generate

    corpus = work / f"corpus-{per_speaker}"
    if not (corpus / "README.txt").is_file():
        generate(corpus, per_speaker=per_speaker, seed=0, force=True)
    store, run = work / f"store-{per_speaker}", work / f"run-{per_speaker}"
    for p in (store, run):
        shutil.rmtree(p, ignore_errors=True)
    row: dict = {"per_speaker": per_speaker}
    row["prepare"] = measure(mmfer("prepare", corpus, "--out", store))
    row.update(corpus_facts(store))
    row["cv_mmmf"] = measure(mmfer("cv", store, "--model", "mmmf", "--out", run))
    row["cv_mmmf"].update(cv_facts(run))
    n = row["utterances"]
    row["prepare"]["ms_per_utterance"] = round(1000 * row["prepare"]["seconds"] / n, 2)
    row["prepare"]["x_real_time"] = round(row["audio_hours"] * 3600 / row["prepare"]["seconds"], 1)
    row["cv_mmmf"]["ms_per_utterance"] = round(1000 * row["cv_mmmf"]["seconds"] / n, 2)
    row["cv_mmmf"]["ms_per_utterance_epoch"] = round(1000 * row["cv_mmmf"]["seconds"]
                                                     / max(row["cv_mmmf"]["train_utterance_epochs"], 1), 3)
    if ray:
        from ray_cluster import RayCluster

        cluster = RayCluster(cpus_per_node=1)  # two nodes of one CPU each: the machine's two cores
        try:
            ray_store = work / f"store-ray-{per_speaker}"
            shutil.rmtree(ray_store, ignore_errors=True)
            row["prepare_ray"] = measure(mmfer("prepare", corpus, "--out", ray_store, "--ray", cluster.address),
                                         env=cluster.env)
            row["prepare_ray"]["ms_per_utterance"] = round(1000 * row["prepare_ray"]["seconds"] / n, 2)
            row["prepare_ray"]["note"] = "peak_mb is the driver's alone; Ray's workers are not its children"
            row["prepare_ray"]["listeners_on_loopback_only"] = all(
                a.startswith("127.") or a == "::1" for a, _ in cluster.opened())
            shutil.rmtree(ray_store, ignore_errors=True)
        finally:
            cluster.stop()
    print(json.dumps(row), flush=True)
    return row


def settings_line() -> str:
    """The default features the sizes ran with, read from the config (not written by hand)."""
    from mmfer.config import FeatureConfig

    f = FeatureConfig()
    return f"streams {', '.join(f.streams)}; acoustic {f.acoustic}, lexical {f.lexical}"


def flatness(rows: list[dict], stage: str, key: str = "ms_per_utterance") -> dict:
    """Cost per utterance against the smallest size: within ±20 %, and (what matters for growth) never more
    than 20 % above it. Fixed start-up costs (model loading, worker start) make small runs dearer."""
    vals = [r[stage][key] for r in rows if stage in r]
    first = vals[0]
    return {"values": vals, "largest_vs_smallest": round(vals[-1] / first, 3),
            "within_20_percent": all(abs(v / first - 1) <= 0.2 for v in vals),
            "never_20_percent_above_smallest": all(v <= 1.2 * first for v in vals)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="54,270,540", help="--per-speaker values (10 speakers each)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/mmfer-scale"))
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "scale.json")
    ap.add_argument("--no-ray", action="store_true", help="skip prepare through Ray")
    ap.add_argument("--summarise", action="store_true", help="only recompute the summary of --out's sizes")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    if args.summarise:
        rows = json.loads(args.out.read_text())["sizes"]
    else:
        rows = [one_size(args.work, int(s), not args.no_ray) for s in args.sizes.split(",")]
    largest = rows[-1]
    # IEMOCAP from the largest point: prepare scales with audio, the BLSTMs with frames (utterance length)
    prep_rt = largest["prepare"]["x_real_time"]
    cv_per_utt = largest["cv_mmmf"]["seconds"] / largest["utterances"]
    longer = IEMOCAP_MEAN_SECONDS / largest["mean_seconds"]
    est_prepare = IEMOCAP_UTTERANCES * IEMOCAP_MEAN_SECONDS / prep_rt
    est_cv = IEMOCAP_UTTERANCES * cv_per_utt * longer
    result = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "settings": f"defaults ({settings_line()}; mmmf, leave one session out)",
        "sizes": rows,
        "flat": {"prepare": flatness(rows, "prepare"), "cv_mmmf": flatness(rows, "cv_mmmf"),
                 "cv_mmmf_per_utterance_epoch": flatness(rows, "cv_mmmf", "ms_per_utterance_epoch"),
                 **({"prepare_ray": flatness(rows, "prepare_ray")} if "prepare_ray" in largest else {})},
        "cv_peak_mb_largest": largest["cv_mmmf"]["peak_mb"],
        "cv_peak_under_2gb": largest["cv_mmmf"]["peak_mb"] < 2048,
        "iemocap_estimate": {
            "assumes": f"{IEMOCAP_UTTERANCES} utterances of {IEMOCAP_MEAN_SECONDS} s on average (about 7 h); "
                       f"prepare at the largest size's {prep_rt}x real time; cv per utterance scaled by length "
                       f"({IEMOCAP_MEAN_SECONDS} s / {largest['mean_seconds']} s)",
            "prepare_minutes": round(est_prepare / 60, 1),
            "cv_mmmf_minutes": round(est_cv / 60, 1),
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("flat", "cv_peak_mb_largest", "iemocap_estimate")}, indent=2))


if __name__ == "__main__":
    main()
