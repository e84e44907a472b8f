from __future__ import annotations

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


@pytest.fixture(scope="session")
def sample_corpus(tmp_path_factory) -> Path:
    """A small synthetic corpus (80 utterances) in IEMOCAP layout, made once per test session."""
    from mmfer.corpora.sample import generate

    return generate(tmp_path_factory.mktemp("sample") / "corpus", per_speaker=SAMPLE_PER_SPEAKER, seed=3,
                    progress=False)


@pytest.fixture(scope="session")
def trained_runs(tmp_path_factory, sample_corpus) -> Path:
    """runs/{audio,mmmf} trained briefly on real features of the sample corpus (for predict/serve tests): two
    of the five folds, enough for an ensemble and cheaper to train and to predict with."""
    from mmfer.config import load_config
    from mmfer.features.prepare import prepare
    from mmfer.training.cv import run_cv

    base = tmp_path_factory.mktemp("trained")
    prepare(sample_corpus, base / "store", progress=False, warn=lambda m: None)
    cfg = load_config(None, {"model": {"hidden": 16, "attention_dim": 16, "fusion_dim": 16},
                             "train": {"max_epochs": 2, "threads": 1}})
    for m in ("audio", "mmmf"):
        run_cv(base / "store", m, cfg, base / "runs" / m, progress=False, echo=lambda s: None, only=TRAINED_FOLDS)
    return base / "runs"
