"""mmfer as a library: the pipeline's stages as functions, the one layer the command line is built on.

    import mmfer
    store = mmfer.prepare("IEMOCAP_full_release", "store")
    summary = mmfer.cross_validate(store, "mmmf", out="runs/mmmf")
    model = mmfer.load("runs/mmmf")
    model.predict("utterance.wav").emotion
"""

from __future__ import annotations

from pathlib import Path

from mmfer.config import FeatureConfig, MmferConfig
from mmfer.engine import executor_for
from mmfer.errors import MmferError


def prepare(corpus: str | Path, out: str | Path, *, features: FeatureConfig | None = None, reader: str | None = None,
            labels: str | None = None, strict: bool = False, progress: bool = True, warn=print,
            allow_outside: bool = False, transcribe=None, language: str | None = None, ray: str | None = None,
            ray_transfer: bool = False, **overrides):
    """Extract the feature store of a corpus (``features.prepare``); returns its PrepareResult.

    ``transcribe``: a recogniser (``speech.asr.recogniser``) whose transcripts replace the corpus's own
    before the text streams are built (what recognition errors cost); a corpus-side step, journalled in
    the store. ``ray``: run the shards as Ray tasks (``--ray``); ``ray_transfer``: workers send the arrays
    back instead of writing them.
    """
    from mmfer.features.prepare import open_corpus, prepare_corpus
    from mmfer.features.store import store_lock

    features = FeatureConfig.model_validate({**(features or FeatureConfig()).model_dump(), **overrides})
    out = Path(out).expanduser().resolve()
    c = open_corpus(corpus, reader, labels, allow_outside, warn)
    out.mkdir(parents=True, exist_ok=True)
    with store_lock(out):
        errors = []
        if transcribe is not None:
            from mmfer.speech.transcribe import transcribe_corpus

            c.require(("audio",), "--transcribe")
            c, errors = transcribe_corpus(c, out, transcribe, language, progress)
        return prepare_corpus(c, out, features, strict, progress, warn,
                              executor_for(ray, features.workers, ray_transfer), errors)


def config(path: str | Path | None = None, **sections) -> MmferConfig:
    """The configuration of a YAML file (or the defaults), with ``sections`` (``train={"seed": 1}``) on top."""
    from mmfer.config import load_config

    return load_config(path, sections)


__all__ = ["prepare", "config", "MmferError"]
