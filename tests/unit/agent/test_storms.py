"""The agent's view of storm control: which interfaces the program holds, from samples of its state. (The
program's own decisions are tested in the kernel: tests/integration/test_actions_in_the_kernel.py.)"""

from __future__ import annotations

from kumo.agent.storms import PortState, StormWatch

LIMIT, STORM_RATE, LEAVE = 5000, 500, 5.0
PORT, OTHER = 7, 8


def watch() -> StormWatch:
    storms = StormWatch(LIMIT, STORM_RATE, leave_after=LEAVE)
    storms.observe(0.0, {PORT: PortState(0, False, 0)})
    return storms


def test_a_port_the_program_holds_is_reported_with_its_offered_rate():
    storms = watch()
    assert storms.observe(1.0, {PORT: PortState(20000, True, 1)}) == ({PORT: 1}, [])
    assert storms.held(1.5) == {PORT: {"offered_per_s": 20000, "held_s": 0.5}}
    assert storms.observe(2.0, {PORT: PortState(40000, True, 1)}) == ({}, [])  # still the same storm


def test_a_port_the_program_lets_go_ends_its_storm():
    storms = watch()
    storms.observe(1.0, {PORT: PortState(20000, True, 1)})
    assert storms.observe(2.0, {PORT: PortState(20100, False, 1)}) == ({}, [PORT])
    assert storms.held(2.0) == {}


def test_a_held_port_that_falls_silent_is_let_go_after_the_leave_time():
    """The program lets it go only at its next miss; the agent does not wait for one."""
    storms = watch()
    storms.observe(1.0, {PORT: PortState(20000, True, 1)})
    assert storms.observe(5.9, {PORT: PortState(20000, True, 1)}) == ({}, [])
    assert storms.observe(6.1, {PORT: PortState(20000, True, 1)}) == ({}, [PORT])
    # it storms again: the program's next miss shows it calm (let go), then holds it anew
    assert storms.observe(8.0, {PORT: PortState(40000, True, 2)}) == ({PORT: 1}, [])


def test_storms_started_and_ended_between_two_samples_are_counted():
    storms = watch()
    storms.observe(1.0, {PORT: PortState(20000, True, 1)})
    assert storms.observe(2.0, {PORT: PortState(50000, True, 3)}) == ({PORT: 2}, [])


def test_a_busy_port_under_its_limit_is_never_reported():
    storms = watch()
    for second in range(1, 10):
        assert storms.observe(float(second), {PORT: PortState(4000 * second, False, 0)}) == ({}, [])
    assert storms.held(10.0) == {} and storms.offered_per_s(PORT) == 4000


def test_ports_that_go_are_forgotten():
    storms = watch()
    storms.observe(1.0, {PORT: PortState(20000, True, 1), OTHER: PortState(10, False, 0)})
    assert storms.observe(2.0, {OTHER: PortState(20, False, 0)}) == ({}, [])
    assert storms.held(2.0) == {} and storms.offered_per_s(PORT) == 0.0


def test_storm_control_is_off_without_a_limit_or_a_lower_storm_rate():
    assert StormWatch(LIMIT, STORM_RATE).enabled
    for limit, storm_rate in ((0, STORM_RATE), (LIMIT, 0), (LIMIT, LIMIT)):
        assert not StormWatch(limit, storm_rate).enabled
