"""The one registry pattern (`advisor.registry`): register once, used everywhere; a typo lists valid names."""

import pytest

from advisor.errors import UserError
from advisor.eval.tasks import TASKS, TaskInterface, get_task
from advisor.offload.policies import LRU, POLICIES, PolicyInterface, build_policies, make_policy


def test_registered_policy_is_built_by_name(monkeypatch):
    class Mine(LRU):
        pass

    monkeypatch.setitem(PolicyInterface._global_mapping, "mine", Mine)
    assert "mine" in POLICIES and list(POLICIES)[-1] == "mine"
    assert all(isinstance(p, Mine) and p.capacity == 2 for p in build_policies("mine", [2, 2]))
    with pytest.raises(UserError, match=r"^unknown cache policy 'mru'; choose one of: lru, lfu, .*, mine$"):
        make_policy("mru", 2)


def test_registered_task_is_built_by_name(monkeypatch):
    toy = get_task("toy", limit=3)
    monkeypatch.setitem(TaskInterface._global_mapping, "tiny-toy", lambda _path, _style: toy)
    assert get_task("Tiny-Toy").examples == toy.examples
    with pytest.raises(UserError, match=r"^unknown task 'Toys'; choose one of: toy, gsm8k, humaneval, tiny-toy$"):
        get_task("Toys")
    local = TaskInterface()
    local["only-here"] = TASKS["toy"]
    assert "only-here" in local and "only-here" not in TASKS
