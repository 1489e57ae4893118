"""One registry mechanism: every registry is filled with ``register``, names come from the object."""

from __future__ import annotations

import pytest

from medprune.errors import RegistryError
from medprune.registry import Registry


def test_register_takes_the_name_from_the_class_or_function() -> None:
    reg = Registry("thing")

    @reg.register
    class Alpha:
        name = "alpha"

    @reg.register
    def beta() -> int:
        return 2

    @reg.register("gamma")
    def make_gamma() -> int:
        return 3

    assert reg.names() == ["alpha", "beta", "gamma"]
    assert reg.get("alpha") is Alpha and reg.create("gamma") == 3


def test_a_class_registered_under_another_name_than_its_own_is_refused() -> None:
    reg = Registry("schedule")
    with pytest.raises(RegistryError, match="schedule Slow is named 'slow' but registered as 'fast'"):
        @reg.register("fast")
        class Slow:
            name = "slow"


def test_duplicates_and_unknown_names() -> None:
    reg = Registry("criterion")
    reg.register("l1")(lambda: 1)
    with pytest.raises(RegistryError, match="criterion 'l1' is already registered"):
        reg.register("l1")(lambda: 2)
    with pytest.raises(RegistryError, match="unknown criterion 'l2'; did you mean 'l1'"):
        reg.get("l2")


@pytest.mark.parametrize("registry", ["criteria", "schedules", "tasks"])
def test_the_project_registries_name_classes_by_their_name(registry: str) -> None:
    from medprune.compress.importance import CRITERIA
    from medprune.compress.schedules import SCHEDULES
    from medprune.tasks import TASKS

    reg = {"criteria": CRITERIA, "schedules": SCHEDULES, "tasks": TASKS}[registry]
    assert reg.names() and all(reg.get(n).name == n for n in reg.names())
