"""Trainer checkpoints keep hook state by a stable name (class + index within the class), not by position."""
from __future__ import annotations

from typing import Any

import pytest

from vreid.engine.checkpoint import CheckpointError
from vreid.engine.hooks import Hook
from vreid.engine.trainer import hook_names, hook_states, load_hook_states


class Counter(Hook):
    def __init__(self, count: int = 0) -> None:
        self.count = count

    def state_dict(self) -> dict[str, Any]:
        return {"count": self.count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.count = state["count"]


class Queue(Hook):
    def __init__(self, items: tuple = ()) -> None:
        self.items = list(items)

    def state_dict(self) -> dict[str, Any]:
        return {"items": list(self.items)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.items = list(state["items"])


def test_names_count_only_hooks_of_the_same_class():
    assert hook_names([Counter(), Queue(), Counter()]) == ["Counter", "Queue", "Counter#1"]


def test_hooks_in_another_order_get_their_own_state():
    saved = hook_states([Queue((1, 2)), Counter(7), Counter(9)])
    counter_a, queue, counter_b = Counter(), Queue(), Counter()
    load_hook_states([counter_a, queue, counter_b], saved)
    assert (counter_a.count, counter_b.count, queue.items) == (7, 9, [1, 2])


def test_old_positional_keys_are_read_by_class():
    saved = {"0:Queue": {"items": [3]}, "1:Counter": {"count": 4}, "2:Counter": {"count": 5}}
    counter_a, counter_b, queue = Counter(), Counter(), Queue()
    load_hook_states([counter_a, counter_b, queue], saved)
    assert (counter_a.count, counter_b.count, queue.items) == (4, 5, [3])


def test_a_saved_state_without_its_hook_is_a_clear_error():
    saved = hook_states([Counter(1), Queue((2,))])
    with pytest.raises(CheckpointError, match="hook 'Queue'"):
        load_hook_states([Counter()], saved)


def test_an_empty_saved_state_without_its_hook_is_fine():
    counter = Counter()
    load_hook_states([counter], {"0:CrashAt": {}, "1:Counter": {"count": 3}})
    assert counter.count == 3
