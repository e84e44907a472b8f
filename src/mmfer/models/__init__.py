"""PyTorch models: exact padded BLSTMs, context attention pooling, fusion heads; the model registry.

The registry is imported eagerly and the networks lazily (PEP 562): the CLI reads the registry for its
``--help`` and must not pay torch's import (about 2 s) before printing it.
"""

from mmfer.models.registry import MODELS, get_model, kinds_of, preference_order

__all__ = ["MODELS", "EmotionModel", "build_model", "get_model", "kinds_of", "preference_order"]


def __getattr__(name: str):
    if name in ("EmotionModel", "build_model"):
        from mmfer.models import nets

        return getattr(nets, name)
    raise AttributeError(f"module 'mmfer.models' has no attribute {name!r}")
