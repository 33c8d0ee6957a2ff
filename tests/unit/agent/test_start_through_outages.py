"""An agent that is starting rides through a store outage instead of exiting (issue 21): the store is tried
again with back-off until it answers, a start that failed partway is abandoned cleanly, and a stop asked for
meanwhile ends the wait."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from kumo.agent import run
from kumo.topology.errors import StoreUnavailable


class FakeAgent:
    def __init__(self, fails: list[bool]) -> None:
        self.fails = fails
        self.abandoned = False

    def start(self) -> None:
        if self.fails.pop(0):
            raise StoreUnavailable("ZooKeeper at zk:2181 did not answer")

    def abandon_start(self) -> None:
        self.abandoned = True


@pytest.fixture(autouse=True)
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(run, "START_RETRY_FIRST_S", 0.01)
    monkeypatch.setattr(run, "START_RETRY_MAX_S", 0.02)


def test_the_store_is_tried_until_it_answers_and_a_half_start_is_abandoned() -> None:
    opens: list[int] = []
    store: Any = object()

    def open_it() -> Any:
        opens.append(1)
        if len(opens) < 3:
            raise StoreUnavailable("cannot reach ZooKeeper at zk:2181")
        return store

    agents: list[FakeAgent] = []
    starts = [True, False]  # the first start fails partway (a leader election), the second goes through

    def make(s: Any) -> Any:
        assert s is store
        agents.append(FakeAgent(starts))
        return agents[-1]

    started = run.start_through_outages(open_it, make, threading.Event())
    assert started is not None and started[0] is store and started[1] is agents[-1]
    assert len(opens) == 3 and len(agents) == 2 and agents[0].abandoned and not agents[1].abandoned


def test_a_stop_ends_the_wait() -> None:
    done = threading.Event()

    def open_it() -> Any:
        done.set()  # the operator stops the agent while the store is down
        raise StoreUnavailable("cannot reach ZooKeeper at zk:2181")

    assert run.start_through_outages(open_it, lambda s: s, done) is None


def test_other_errors_are_not_retried() -> None:
    def open_it() -> Any:
        raise ValueError("a bug")

    with pytest.raises(ValueError):
        run.start_through_outages(open_it, lambda s: s, threading.Event())
