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
