"""PyTorch models: exact padded BLSTMs, context attention pooling, GMU fusion."""

from mmfer.models.nets import MODELS, EmotionModel, build_model, kinds_of

__all__ = ["MODELS", "EmotionModel", "build_model", "kinds_of"]
