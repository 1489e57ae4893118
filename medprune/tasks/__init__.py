"""Tasks: what a kind of problem (classification, segmentation, ...) asks of the engine.

Every stage — training, evaluation, pruning calibration, the safety gate, export checks, the
report — goes through a :class:`Task`; none of them branches on the task's name::

    from medprune.tasks import create_task
    task = create_task("segmentation", ["background", "tissue", "plaque"])
    task.gate_metric                      # 'worst_class_dice'
"""

from medprune.tasks import classification, detection, segmentation  # noqa: F401  (importing registers the tasks)
from medprune.tasks.base import TASKS, Evaluation, Evaluator, MetricSpec, Task, create_task, list_tasks, task_class
from medprune.tasks.classification import ClassificationTask, first_output
from medprune.tasks.detection import DetectionTask
from medprune.tasks.segmentation import SegmentationTask, median_frequency_weights

__all__ = ["TASKS", "Task", "Evaluator", "Evaluation", "MetricSpec", "create_task", "list_tasks",
           "task_class", "ClassificationTask", "DetectionTask", "SegmentationTask", "first_output", "median_frequency_weights"]
