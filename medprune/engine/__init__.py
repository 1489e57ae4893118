"""Training engine: trainer loop, optimisers and schedules, checkpoints, DDP plumbing, jobs."""

from medprune.engine.checkpoint import load_checkpoint, load_model_weights, save_checkpoint
from medprune.engine.distributed import DistInfo
from medprune.engine.optim import build_optimizer, build_scheduler
from medprune.engine.trainer import Predictions, Trainer, TrainResult, predict

__all__ = ["Trainer", "TrainResult", "Predictions", "predict", "DistInfo", "build_optimizer", "build_scheduler",
           "save_checkpoint", "load_checkpoint", "load_model_weights"]
