from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from iemocap_fixture import write_iemocap  # noqa: E402


@pytest.fixture()
def iemocap_root(tmp_path: Path) -> Path:
    return write_iemocap(tmp_path)


SAMPLE_PER_SPEAKER = 8
TRAINED_FOLDS = ["Ses01", "Ses02"]


def shared(tmp_path_factory, name: str, build) -> Path:
    """A read-only fixture folder built once per test run, also when pytest-xdist runs several workers: the
    first worker builds it under a file lock in the run's shared temp folder, the others wait and reuse it
    (each building its own cost a minute and a half of the suite's wall time)."""
    import shutil

    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base  # pytest-N/: this run's only
    target = root / f"shared-{name}"
    with FileLock(str(root / f"shared-{name}.lock")):
        if not (target / ".complete").is_file():
            if target.exists():
                shutil.rmtree(target)
            target.mkdir()
            build(target)
            (target / ".complete").write_text("built\n")
    return target


@pytest.fixture(scope="session")
def sample_corpus(tmp_path_factory) -> Path:
    """A small synthetic corpus (80 utterances) in IEMOCAP layout, made once per test run."""
    from mmfer.corpora.sample import generate

    def build(folder: Path) -> None:
        generate(folder / "corpus", per_speaker=SAMPLE_PER_SPEAKER, seed=3, progress=False)

    return shared(tmp_path_factory, "sample", build) / "corpus"


@pytest.fixture(scope="session")
def few_utterances(tmp_path_factory, sample_corpus) -> Path:
    """A manifest of 12 sample-corpus utterances (absolute paths: prepare with allow_outside=True), for the
    tests that only need some real audio to extract, at a seventh of the whole corpus's cost."""
    from mmfer.corpora import read_corpus

    t = read_corpus(sample_corpus).table.head(12)
    path = tmp_path_factory.mktemp("few") / "few.csv"
    t[["utt_id", "audio", "text", "label", "speaker"]].rename(columns={"utt_id": "id"}).to_csv(path, index=False)
    return path


@pytest.fixture(scope="session")
def trained_runs(tmp_path_factory, sample_corpus) -> Path:
    """runs/{audio,mmmf} trained briefly on real features of the sample corpus (for predict/serve tests): two
    of the five folds, enough for an ensemble and cheaper to train and to predict with. Built once per test
    run (see shared); tests that change a run copy it first."""
    from mmfer.config import load_config
    from mmfer.features.prepare import prepare
    from mmfer.training.cv import run_cv

    def build(base: Path) -> None:
        prepare(sample_corpus, base / "store", progress=False, warn=lambda m: None)
        cfg = load_config(None, {"model": {"hidden": 16, "attention_dim": 16, "fusion_dim": 16},
                                 "train": {"max_epochs": 2, "threads": 1}})
        for m in ("audio", "mmmf"):
            run_cv(base / "store", m, cfg, base / "runs" / m, progress=False, echo=lambda s: None,
                   only=TRAINED_FOLDS)

    return shared(tmp_path_factory, "trained", build) / "runs"


def pytest_collection_modifyitems(session, config, items):
    """File order for two xdist workers (``--dist loadfile --no-loadscope-reorder``, as `make test` runs it):
    first one file that needs the trained runs, so that one worker starts building them (about a minute)
    at once; then the files that need no shared fixture, which the other worker runs meanwhile instead of
    waiting; then those that need only the sample corpus; then the rest. Largest files first within each
    group, so that no long file starts last. The order changes no result, only the suite's wall time."""
    files: dict = {}
    for item in items:
        files.setdefault(item.path, []).append(item)

    def rank(path) -> int:
        names = {n for it in files[path] for n in getattr(it, "fixturenames", ())}
        return 2 if "trained_runs" in names else 1 if names & {"sample_corpus", "few_utterances"} else 0

    def size(path) -> int:
        return -path.stat().st_size  # a file's length: a rough proxy for its running time

    trained = sorted((p for p in files if rank(p) == 2), key=size)
    order = trained[:1] + sorted((p for p in files if rank(p) == 0), key=size) + \
        sorted((p for p in files if rank(p) == 1), key=size) + trained[1:]
    items[:] = [it for p in order for it in files[p]]
