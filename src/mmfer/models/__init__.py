"""PyTorch models: exact padded BLSTMs, context attention pooling, fusion heads; the model registry."""

from mmfer.models.nets import EmotionModel, build_model
from mmfer.models.registry import MODELS, get_model, kinds_of, preference_order

__all__ = ["MODELS", "EmotionModel", "build_model", "get_model", "kinds_of", "preference_order"]
