"""How the report names and picks a task's metrics: the ones it leads with, and their words in a sentence.

Everything here is read off the task's own lists (:attr:`~medprune.tasks.Task.summary_metrics`,
:attr:`~medprune.tasks.Task.per_class_metrics`, :attr:`~medprune.tasks.Task.gate_metric`), so a new
task's report speaks its metrics without an ``if task == ...`` anywhere::

    lead = HeadlineMetrics.of(task_class("segmentation"))
    sentence_label(lead.gate, task_class("segmentation"))      # 'worst-class Dice'
    metric_name("val_worst_class_sensitivity")                  # 'val worst-class sensitivity'
"""

from __future__ import annotations

from dataclasses import dataclass

from medprune.errors import DataError
from medprune.tasks import MetricSpec, Task, list_tasks, task_class

__all__ = ["HeadlineMetrics", "sentence_label", "metric_name"]


@dataclass(frozen=True)
class HeadlineMetrics:
    """The metrics a report leads with, read off a task's metric lists.

    ``score``: the first summary metric that is not the gate's (balanced accuracy, mean Dice);
    ``gate``: the summary metric the safety gate watches (worst-class sensitivity, worst-class
    Dice); ``per_class``: the per-class metric the worst class is judged on — a task lists it
    first (sensitivity, Dice). Example::

        task = task_class("segmentation")
        lead = HeadlineMetrics.of(task)
        lead.gate.key, sentence_label(lead.gate, task)      # ('worst_class_dice', 'worst-class Dice')
    """

    score: MetricSpec
    gate: MetricSpec
    per_class: MetricSpec

    @classmethod
    def of(cls, task: Task | type[Task]) -> HeadlineMetrics:
        """The headline metrics of ``task`` (a task class or instance).

        Raises:
            DataError: if the task lists no per-class metric (a report compares classes).
        """
        if not task.per_class_metrics:
            raise DataError(f"task {task.name!r} lists no per_class_metrics: a report has no per-class metric "
                            "to compare")
        gate = next((s for s in task.summary_metrics if s.key == task.gate_metric),
                    MetricSpec(task.gate_metric, task.gate_metric.replace("_", " ").capitalize()))
        score = next((s for s in task.summary_metrics if s.key != task.gate_metric), gate)
        return cls(score=score, gate=gate, per_class=task.per_class_metrics[0])


def sentence_label(spec: MetricSpec, task: Task | type[Task]) -> str:
    """``spec.label`` as it reads inside a sentence: ``Balanced accuracy`` → ``balanced accuracy``,
    ``Worst-class Dice`` → ``worst-class Dice``; acronyms (``PPV``, ``HD95``, ``F1``) and names the
    task's labels capitalise mid-label (``Dice`` of ``Mean Dice``) keep their capitals."""
    names = {word for s in (*task.summary_metrics, *task.per_class_metrics) for word in s.label.split()[1:]}
    first, space, rest = spec.label.partition(" ")
    if first[:1].isupper() and first[1:].islower() and first not in names:
        first = first.lower()
    return first + space + rest


def metric_name(key: str) -> str:
    """A logged key as a figure names it: ``val_worst_class_dice`` → ``val worst-class Dice``, with the
    label of the registered task that has the metric; unknown keys with spaces for underscores."""
    prefix = "val " if key.startswith("val_") else ""
    metric = key.removeprefix("val_")
    for name in list_tasks():
        task = task_class(name)
        spec = next((s for s in task.summary_metrics if s.key == metric), None)
        if spec is not None:
            return prefix + sentence_label(spec, task)
    return key.replace("_", " ")
