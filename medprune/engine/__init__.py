"""Training engine: the task-agnostic trainer loop, optimisers and schedules, checkpoints, DDP plumbing."""

from medprune.engine.checkpoint import load_checkpoint, load_model_weights, save_checkpoint
from medprune.engine.distributed import DistInfo
from medprune.engine.optim import build_optimizer, build_scheduler
from medprune.engine.trainer import Distillation, Trainer, TrainHook, TrainResult, predict

__all__ = ["Trainer", "TrainResult", "TrainHook", "Distillation", "predict", "DistInfo", "build_optimizer",
           "build_scheduler", "save_checkpoint", "load_checkpoint", "load_model_weights"]
