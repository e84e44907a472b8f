"""The run folder, owned here: training writes through this module, analysis and serve read through it.

Layout of a cross-validation run (``mmfer cv --out RUN``)::

    config.yaml              the run's configuration (features, model, train): loads with --config as it is
    provenance.json          what it was made of: model, store, the streams' feature settings, versions
    folds.json               the partition used (each fold's train/val/test ids): --folds-file reproduces it
    summary.json             written last: mean ± std over folds (and seeds), intervals, pooled confusion
                             (its presence = finished)
    fold-N/model.pt          checkpoint (format below), loaded with weights_only=True
    fold-N/predictions.parquet  test utterances: probabilities, attention per stream, gate
    fold-N/metrics.json      written last in the fold: its presence = fold done (resume skips it)
    fold-N-seed-S/...        the same, once per seed, in a run of several seeds (``--seeds``)

Layout of an export (``mmfer export RUN --out DIR``)::

    mmfer-model.json         the marker: model, classes, folds, streams' feature settings, summary
    config.yaml              the run's config; provenance.json beside it
    models/fold-N.pt         the fold checkpoints

The checkpoint format is ``models.checkpoint``'s; this module knows where checkpoints lie.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

import pandas as pd
import yaml

from mmfer.errors import MmferError
from mmfer.io import atomic_path, check_writable, read_json, write_json, write_text
from mmfer.models.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from mmfer.streams import stream

__all__ = ["load_checkpoint", "read_checkpoint", "save_checkpoint"]  # the format's functions, where runs are read
CONFIG = "config.yaml"
PROVENANCE = "provenance.json"
SUMMARY = "summary.json"
METRICS = "metrics.json"
PREDICTIONS = "predictions.parquet"
CHECKPOINT = "model.pt"
EXPORT_MARKER = "mmfer-model.json"


FOLDS = "folds.json"


def fold_dir(run: Path, index: int, seed: int | None = None) -> Path:
    """Folder of fold ``index`` (0-based) of a run; ``seed``: that seed's copy in a run of several seeds."""
    return Path(run) / (f"fold-{index + 1}" if seed is None else f"fold-{index + 1}-seed-{seed}")


def _fold_of(name: str) -> tuple[int, int | None]:
    """(1-based fold, seed or None) of a fold folder or exported checkpoint name (0 for a foreign name)."""
    m = re.fullmatch(r"fold-(\d+)(?:-seed-(-?\d+))?", name)
    if not m:
        return 0, None
    return int(m.group(1)), (int(m.group(2)) if m.group(2) is not None else None)


def _order(name: str) -> tuple[int, int]:
    fold, seed = _fold_of(name)
    return fold, -(2 ** 31) if seed is None else seed


def is_export(path: Path) -> bool:
    return (Path(path) / EXPORT_MARKER).is_file()


def checkpoints(path: Path, fold: int | None = None, seed: int | None = None) -> list[Path]:
    """The fold checkpoints of a run or an export, every seed's (``fold``: 1-based, one fold only;
    ``seed``: one seed of a run of several)."""
    path = Path(path)
    if is_export(path):
        files = sorted((path / "models").glob("fold-*.pt"), key=lambda f: _order(f.stem))
    else:
        files = sorted(path.glob(f"fold-*/{CHECKPOINT}"), key=lambda f: _order(f.parent.name))
    name = (lambda f: f.stem) if is_export(path) else (lambda f: f.parent.name)
    if fold is not None:
        files = [f for f in files if _fold_of(name(f))[0] == fold]
        if not files:
            raise MmferError(f"{path}: no fold {fold}")
    if seed is not None:
        seeds = sorted({_fold_of(name(f))[1] for f in files} - {None})
        files = [f for f in files if _fold_of(name(f))[1] == seed]
        if not files:
            raise MmferError(f"{path}: no seed {seed}" + (f" (its seeds: {', '.join(map(str, seeds))})" if seeds
                                                          else " (a run of one seed: leave --seed out)"))
    if not files:
        raise MmferError(f"{path} holds no trained model (expected fold-*/{CHECKPOINT} of `mmfer cv`, or an "
                         "`mmfer export` folder)")
    return files


def has_model(path: Path) -> bool:
    return is_export(path) or any(Path(path).glob(f"fold-*/{CHECKPOINT}"))


def model_name(path: Path) -> str:
    """The registry name of the model in a run or export folder (from its config or marker)."""
    path = Path(path)
    if is_export(path):
        return read_json(path / EXPORT_MARKER)["model"]
    if (path / CONFIG).is_file():
        return read_provenance(path)["model"]
    return read_checkpoint(checkpoints(path)[0])["model"]


def resolve_model_dir(path: str | Path, modalities: tuple[str, ...]) -> Path:
    """A run/export folder, or a folder of runs (quickstart's runs/): the most preferred model (registry
    order) that needs only the given input ``modalities``."""
    from mmfer.models.registry import get_model, preference_order

    path = Path(path).expanduser().resolve()
    if not path.is_dir():
        raise MmferError(f"model folder not found: {path}")
    if has_model(path):
        return path
    for name in preference_order(modalities):
        sub = path / name
        if sub.is_dir() and has_model(sub) and set(get_model(model_name(sub)).modalities) <= set(modalities):
            return sub
    if "text" not in modalities and any(p.is_dir() and has_model(p) for p in path.iterdir()):
        raise MmferError(f"{path} has no audio-only model: pass the transcript with --text")
    raise MmferError(f"no trained run in {path}")


# ---------------------------------------------------------------- config and summary

def _comparable(config: dict, stored: bool = False) -> dict:
    """A config as the resume check compares it: every field filled with its default, the list of seeds
    left out (a run may gain seeds). ``stored``: the config of an existing run, whose missing fields are
    read as what mmfer did before they existed (``config.BEFORE_FIELD``) where that differs from the
    default; a run made before any other field existed still matches."""
    from mmfer.config import MmferConfig, with_earlier_defaults

    try:
        full = MmferConfig.model_validate(with_earlier_defaults(config) if stored else config).model_dump()
    except Exception:  # noqa: BLE001 - an unreadable old config simply does not match
        return {"unreadable": config}
    full["train"].pop("seeds", None)
    return full


def _differences(run_config: dict, config: dict, limit: int = 3) -> str:
    """'section.field: X in the run, Y now' for the first ``limit`` settings that differ."""
    if "unreadable" in run_config:
        return "its config.yaml does not read as an mmfer config"
    out = []
    for section in sorted(set(run_config) | set(config)):
        a, b = run_config.get(section), config.get(section)
        if not (isinstance(a, dict) and isinstance(b, dict)):
            if a != b:
                out.append(section)
            continue
        out += [f"{section}.{k}: {a.get(k)!r} in the run, {b.get(k)!r} now" for k in sorted(set(a) | set(b))
                if a.get(k) != b.get(k)]
    return "; ".join(out[:limit]) + (f"; and {len(out) - limit} more" if len(out) > limit else "")


def write_config(run: Path, config: dict, provenance: dict) -> None:
    """Write the run's config (the full ``features``/``model``/``train`` sections, loadable with --config)
    and its provenance; refuse to mix with an earlier run of other settings in the same folder."""
    text = yaml.safe_dump(config, sort_keys=False)
    cfg_file, prov_file = Path(run) / CONFIG, Path(run) / PROVENANCE
    same = ("model", "store", "features")
    if cfg_file.is_file():
        try:
            stored = yaml.safe_load(cfg_file.read_text()) or {}
        except (yaml.YAMLError, UnicodeDecodeError):
            stored = {"unreadable": True}
        before, now = _comparable(stored, stored=True), _comparable(config)
        if before != now:
            raise MmferError(f"{run} holds a run with other settings ({_differences(before, now)}); resume it with "
                             f"the same settings (see {cfg_file}) or choose a new --out")
        if not prov_file.is_file() or {k: read_json(prov_file).get(k) for k in same} != \
                {k: provenance.get(k) for k in same}:
            raise MmferError(f"{run} holds a run with another model, store or features; resume it with the same "
                             f"ones (see {prov_file}) or choose a new --out")
    write_json(prov_file, provenance)
    write_text(cfg_file, text)


def read_config(run: Path) -> dict:
    return yaml.safe_load((Path(run) / CONFIG).read_text())


def read_provenance(run: Path) -> dict:
    return read_json(Path(run) / PROVENANCE)


def versions() -> dict[str, str]:
    """The versions that decide what a run computes."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("mmfer", "torch", "numpy", "scikit-learn", "transformers", "opensmile"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


def fold_done(run: Path, index: int, seed: int | None = None) -> dict | None:
    """The metrics of a finished fold, or None."""
    f = fold_dir(run, index, seed) / METRICS
    return read_json(f) if f.is_file() else None


def fold_predictions(run: Path, index: int, seed: int | None = None) -> pd.DataFrame:
    return pd.read_parquet(fold_dir(run, index, seed) / PREDICTIONS)


def write_fold(run: Path, index: int, predictions: pd.DataFrame, metrics: dict, seed: int | None = None) -> None:
    """Predictions, then metrics.json last: its presence marks the fold as done."""
    d = fold_dir(run, index, seed)
    with atomic_path(d / PREDICTIONS) as tmp:
        predictions.to_parquet(tmp, index=False)
    write_json(d / METRICS, metrics)


def write_summary(run: Path, summary: dict) -> None:
    write_json(Path(run) / SUMMARY, summary)


def seconds_per_step(features: dict[str, dict], frame_reduction: int) -> dict[str, float]:
    """Seconds per model input step of each timed sequence stream (hop × frame averaging)."""
    out = {}
    for k, s in features.items():
        hop = s.get("hop_seconds")
        if hop and stream(k).sequence:
            out[k] = hop * (frame_reduction if stream(k).reducible else 1)
    return out


class Run:
    """A finished cv run folder, read once (for the report)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        if not (self.path / SUMMARY).is_file():
            raise MmferError(f"{self.path} is not a finished cv run (no {SUMMARY}); run or resume `mmfer cv`")
        self.summary = read_json(self.path / SUMMARY)
        self.config = read_config(self.path)
        self.provenance = read_provenance(self.path)
        self.name = self.summary["model"]
        self.classes = self.summary["classes"]
        dirs = sorted((p.parent for p in self.path.glob(f"fold-*/{METRICS}")), key=lambda d: _order(d.name))
        self.folds = [read_json(d / METRICS) for d in dirs]
        frames = []
        for d in dirs:
            p = pd.read_parquet(d / PREDICTIONS)
            p["seed"] = _fold_of(d.name)[1]
            frames.append(p)
        self.predictions = pd.concat(frames, ignore_index=True)
        self.steps = seconds_per_step(self.provenance.get("features", {}),
                                      self.config.get("model", {}).get("frame_reduction", 1))


def find_runs(path: Path) -> list[Path]:
    """A run folder itself, or a folder of run folders (quickstart's runs/)."""
    path = Path(path)
    if (path / SUMMARY).is_file():
        return [path]
    runs = sorted(p for p in path.iterdir() if (p / SUMMARY).is_file()) if path.is_dir() else []
    if not runs:
        raise MmferError(f"no finished cv run in {path} (expected {SUMMARY} there or in its subfolders)")
    return runs


# ---------------------------------------------------------------- export

def _written(export_dir: Path) -> set[str]:
    """The files an earlier export wrote (its marker lists them; older exports: mmfer's own names)."""
    marker = read_json(export_dir / EXPORT_MARKER)
    listed = marker.get("files") if isinstance(marker, dict) else None
    if isinstance(listed, list):
        return {str(f) for f in listed} | {EXPORT_MARKER}
    return {EXPORT_MARKER, CONFIG, PROVENANCE} | {p.relative_to(export_dir).as_posix()
                                                  for p in (export_dir / "models").glob("fold-*.pt")}


def export(run: str | Path, out: str | Path, force: bool = False, seed: int | None = None) -> Path:
    """Copy a run's fold models into a self-contained folder (weights, config, normalisation, features).

    Never deletes what mmfer did not write: ``out`` must be new, empty, or (with ``force``) an earlier
    export; it may not lie inside the run. The copy is built in a fresh hidden folder beside ``out`` and
    swapped in at the end.
    """
    run = Path(run).expanduser().resolve()
    out = Path(out).expanduser().resolve()
    if out == run or run in out.parents:
        raise MmferError(f"--out {out} lies inside the run {run}: choose a folder outside it")
    if out in run.parents:
        raise MmferError(f"--out {out} holds the run {run} itself: choose a folder outside it")
    if out.exists():
        if not out.is_dir():
            raise MmferError(f"{out} exists and is a file: choose a new folder for the export")
        if any(out.iterdir()):
            if not is_export(out):
                raise MmferError(f"{out} is not empty and is not an mmfer export: nothing was written; choose a new "
                                 "or empty folder")
            if not force:
                raise MmferError(f"{out} holds an earlier export: pass --force to replace it")
            foreign = sorted(str(p.relative_to(out)) for p in out.rglob("*")
                             if p.relative_to(out).as_posix() not in _written(out) and not p.is_dir())
            if foreign:
                raise MmferError(f"{out} holds files mmfer did not write ({', '.join(foreign[:3])}"
                                 f"{', ...' if len(foreign) > 3 else ''}): nothing was replaced; move them or choose "
                                 "another --out")
    files = checkpoints(run, seed=seed)
    first = read_checkpoint(files[0])
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise MmferError(f"--out {out}: cannot create {out.parent} ({err.strerror or err}); choose another place") \
            from None
    check_writable(out, "--out")
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        (tmp / "models").mkdir()
        for f in files:
            name = f.parent.name if f.name == CHECKPOINT else f.stem
            shutil.copy2(f, tmp / "models" / f"{name}.pt")
        for name in (CONFIG, PROVENANCE):
            if (run / name).is_file():
                shutil.copy2(run / name, tmp / name)
        written = sorted(p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if p.is_file())
        write_json(tmp / EXPORT_MARKER, {
            "model": first["model"], "classes": first["classes"], "folds": len(files), "kinds": first["kinds"],
            "features": first["features"], "frame_reduction": first["model_config"]["frame_reduction"],
            "summary": read_json(run / SUMMARY) if (run / SUMMARY).is_file() else None, "files": written})
        if out.exists():  # empty, or an earlier export (checked above): move it aside, then swap
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
            out.rename(old / "export")
            tmp.rename(out)
            shutil.rmtree(old)
        else:
            tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return out
