"""`mmfer prepare` of this checkout against another one (e.g. a git worktree of an earlier commit), in
alternating rounds on the same corpus and machine: for changes that are code, not settings (those are
``prepare_speed.py``'s). Each run is a fresh process (``python -m mmfer prepare``, the other checkout's
``src`` first on PYTHONPATH), so imports and worker start-up count as a user sees them. The stores must
hold the same bytes when the change is meant to keep the values (checked per stream). Each run also records
the share of the machine's core time that was busy while it ran (``cores_busy``, from /proc/stat): a change
in how the work is scheduled shows there even when the machine's speed drifts more than the change saves.

    git worktree add /tmp/mmfer-old <commit>
    python benchmarks/prepare_versions.py --old /tmp/mmfer-old [--streams acoustic,pooled] [--rounds 3]
    python benchmarks/prepare_versions.py --old /tmp/mmfer-old --predict RUN AUDIO [--rounds 4]

``--predict RUN AUDIO`` times ``mmfer predict RUN AUDIO`` instead (one utterance from a fresh process:
start-up, model and encoder loading, one prediction) and checks that both print the same; writes
benchmarks/results/predict_versions.json.

Default corpus: RAVDESS from ../shared/data. Writes benchmarks/results/prepare_versions.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RAVDESS = HERE.parents[1] / "shared" / "data" / "ravdess" / "manifest.csv"
sys.path.insert(0, str(HERE))

from opensmile_calls import cpu_name  # noqa: E402  (benchmarks/opensmile_calls.py)


def environment(src: Path | None) -> dict:
    """This process's environment, with the other checkout's ``src`` first on PYTHONPATH (``None``: this one)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return env if src is None else {**env, "PYTHONPATH": str(src)}


def revision(path: Path) -> str:
    """The checkout's commit, with '+changes' when its tracked files differ from it."""
    git = ["git", "-C", str(path)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    changed = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                             text=True).stdout.strip()
    return f"{head}+changes" if head and changed else head


def cpu_ticks() -> tuple[int, int] | None:
    """(busy, total) clock ticks of all the machine's cores so far (Linux /proc/stat), or None elsewhere."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def run(src: Path | None, corpus: Path, store: Path, streams: str) -> tuple[float, float | None]:
    """(seconds, share of the machine's core time that was busy meanwhile): on an otherwise idle machine the
    share says how much of the cores the run kept working, which drifts far less than the seconds do."""
    shutil.rmtree(store, ignore_errors=True)
    before, t = cpu_ticks(), time.perf_counter()
    subprocess.run([sys.executable, "-m", "mmfer", "prepare", str(corpus), "--out", str(store), "--streams",
                    streams, "--allow-outside"], env=environment(src), check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    seconds, after = round(time.perf_counter() - t, 1), cpu_ticks()
    busy = None if before is None or after is None else round((after[0] - before[0]) / (after[1] - before[1]), 3)
    return seconds, busy


def predict(src: Path | None, run_dir: str, audio: str) -> tuple[float, str]:
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "mmfer", "predict", run_dir, audio], env=environment(src),
                         check=True, capture_output=True, text=True).stdout
    return round(time.perf_counter() - t, 2), out


def compare_predict(args, old_src: Path, here: str, commit: str) -> None:
    runs: dict[str, list[float]] = {"this": [], "old": []}
    outputs = {}
    for r in range(args.rounds):
        for name in ("this", "old") if r % 2 == 0 else ("old", "this"):
            s, outputs[name] = predict(None if name == "this" else old_src, *args.predict)
            runs[name].append(s)
            print(name, s, "s", flush=True)
    mean = {k: float(np.mean(v)) for k, v in runs.items()}
    result = {"this": here, "old": commit, "machine": cpu_name(), "command": ["mmfer", "predict", *args.predict],
              "seconds": runs, "speedup": round(mean["old"] / mean["this"], 3),
              "same_output": outputs["this"] == outputs["old"], "date": time.strftime("%Y-%m-%d")}
    out = args.out or HERE / "results" / "predict_versions.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--old", type=Path, required=True, help="the other checkout (its src/ is used)")
    ap.add_argument("--corpus", type=Path, default=RAVDESS)
    ap.add_argument("--streams", default="acoustic,functionals,pooled")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--predict", nargs=2, metavar=("RUN", "AUDIO"), help="time `mmfer predict RUN AUDIO` instead")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    old_src = (args.old / "src").resolve()
    commit, here = revision(args.old) or str(args.old), revision(HERE.parent)
    if args.predict:
        compare_predict(args, old_src, here, commit)
        return
    import soundfile as sf

    from mmfer.corpora import read_corpus

    table = read_corpus(args.corpus).table
    seconds = sum(sf.info(a).duration for a in table["audio"])
    args.out = args.out or HERE / "results" / "prepare_versions.json"
    work = Path(tempfile.mkdtemp(prefix="mmfer-versions-"))
    runs: dict[str, list[float]] = {"this": [], "old": []}
    busy: dict[str, list[float | None]] = {"this": [], "old": []}
    for r in range(args.rounds):
        for name in ("this", "old") if r % 2 == 0 else ("old", "this"):
            s, b = run(None if name == "this" else old_src, args.corpus, work / name, args.streams)
            runs[name].append(s)
            busy[name].append(b)
            print(name, s, "s, cores busy", b, flush=True)
    same = {}
    stores = {n: json.loads((work / n / "store.json").read_text())["features"] for n in runs}
    for kind, folder in stores["this"].items():
        other = stores["old"].get(kind)
        same[kind] = other is not None and np.array_equal(np.load(work / "this" / folder / "data.npy"),
                                                          np.load(work / "old" / other / "data.npy"))
    shutil.rmtree(work, ignore_errors=True)
    mean = {k: float(np.mean(v)) for k, v in runs.items()}
    result = {"this": here, "old": commit, "machine": cpu_name(), "corpus": str(args.corpus),
              "utterances": len(table), "audio_seconds": round(seconds, 1), "streams": args.streams.split(","),
              "seconds": runs, "x_real_time": {k: [round(seconds / s, 1) for s in v] for k, v in runs.items()},
              "speedup": round(mean["old"] / mean["this"], 3), "cores_busy": busy, "same_bytes": same,
              "date": time.strftime("%Y-%m-%d")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
