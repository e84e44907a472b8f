"""The checkpoint format: one fold's model as a dict of plain types and tensors, loaded with
``weights_only=True`` (no pickled code).

Keys: ``format``, ``model`` (registry name), ``model_config``, ``classes``, ``dims`` and ``kinds``
(streams), ``norms`` (per stream), ``features`` (per stream: the extractor settings, so the predictor
rebuilds the same extractor), ``normalise`` and ``state_dict``; a fine-tuned text encoder adds
``finetuned_lexical``, a TF-IDF baseline ``ngrams``. Where checkpoints lie in a run or an export is
``runs``' business.
"""

from __future__ import annotations

from pathlib import Path

import torch

from mmfer.config import ModelConfig
from mmfer.errors import MmferError
from mmfer.features.base import stacked_layers
from mmfer.io import atomic_path
from mmfer.models.linear import LinearModel
from mmfer.models.nets import build_model
from mmfer.models.registry import get_model

CHECKPOINT_FORMAT = 1


def save_checkpoint(path: Path, model, model_config: ModelConfig, classes: list[str], dims: dict[str, int],
                    norms: dict, features: dict[str, dict], extra: dict | None = None) -> None:
    ckpt = {
        "format": CHECKPOINT_FORMAT, "model": model.name, "model_config": model_config.model_dump(),
        "classes": classes, "dims": dims, "kinds": list(model.kinds),
        "norms": {k: n.to_dict() for k, n in norms.items()}, "features": features,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}, **(extra or {}),
    }
    with atomic_path(path) as tmp:
        torch.save(ckpt, tmp)


def read_checkpoint(path: Path) -> dict:
    """The checkpoint dict; only tensors and plain types are accepted (no pickled code)."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - truncated, not a checkpoint, or a pickle payload
        raise MmferError(f"{path}: not a readable mmfer checkpoint ({type(err).__name__}: "
                         f"{str(err).splitlines()[0][:100] if str(err) else 'no detail'}); retrain or re-export "
                         "the model") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT or "state_dict" not in ckpt:
        raise MmferError(f"{path}: not an mmfer checkpoint of format {CHECKPOINT_FORMAT}; retrain or re-export")
    return ckpt


def _neural(ckpt: dict, lexical_source: str | None):
    word_model = None
    if ckpt.get("finetuned_lexical"):  # the architecture here, the trained weights from the state dict
        from mmfer.models.tuned import WordTransformer, finetune_source

        settings = ckpt["features"]["lexical"]
        word_model = WordTransformer(finetune_source(settings, lexical_source), settings.get("layers", "last"),
                                     pretrained=False)
    return build_model(ckpt["model"], ckpt["dims"], len(ckpt["classes"]), ModelConfig(**ckpt["model_config"]),
                       stacked_layers(ckpt.get("features", {})), word_model)


def _linear(ckpt: dict, lexical_source: str | None):
    return LinearModel(ckpt["model"], ckpt["dims"], len(ckpt["classes"]))


BUILDERS = {"neural": _neural, "linear": _linear}  # a model family (models.registry) -> its architecture


def load_checkpoint(path: Path, lexical_source: str | None = None):
    """(model in eval mode, checkpoint dict). ``lexical_source``: the text encoder folder the user names,
    needed for a model that fine-tuned a local encoder (the bundled MiniLM is found by itself)."""
    ckpt = read_checkpoint(path)
    model = BUILDERS[get_model(ckpt["model"]).family](ckpt, lexical_source)
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as err:  # a model whose parts changed since this checkpoint was written
        detail = (str(err).splitlines()[1:] or [str(err)])[0].strip()[:120]
        raise MmferError(f"{path}: the checkpoint does not fit this version's '{ckpt['model']}' model ({detail}); "
                         "retrain it with this version") from None
    return model.eval(), ckpt
