"""One fold-training interface with a neural and a linear implementation: the model registry's family says
which (``models.registry.ModelSpec.family``), nothing else tests it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mmfer.config import MmferConfig
from mmfer.features.store import FeatureStore
from mmfer.models.registry import get_model
from mmfer.training.fold_output import FoldResult
from mmfer.training.folds import Fold
from mmfer.training.linear import train_linear_fold
from mmfer.training.trainer import train_neural_fold


@dataclass(frozen=True)
class FoldTrainer:
    train: Callable[..., FoldResult]  # (store, fold, model_name, cfg, classes, run_dir, progress) -> FoldResult
    distributed: bool  # several torchrun processes can share one fold (DDP); else rank 0 trains it alone


TRAINERS = {"neural": FoldTrainer(train_neural_fold, distributed=True),
            "linear": FoldTrainer(train_linear_fold, distributed=False)}


def trainer_of(model_name: str) -> FoldTrainer:
    return TRAINERS[get_model(model_name).family]


def train_fold(store: FeatureStore, fold: Fold, model_name: str, cfg: MmferConfig, classes: list[str],
               run_dir: Path, progress: bool = True) -> FoldResult:
    return trainer_of(model_name).train(store, fold, model_name, cfg, classes, run_dir, progress)
