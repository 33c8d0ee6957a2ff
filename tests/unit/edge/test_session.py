"""A peer's session as the operator sees it (kumo.edge.session)."""

from __future__ import annotations

from kumo.edge.messages import Notification, Open, State, Update
from kumo.edge.session import PeerSession, describe

PEER = "192.0.2.1"


def session(**kwargs: int) -> PeerSession:
    return PeerSession("p1", "r1", "host-2", 65100, **kwargs)


def test_exabgp_transitions_map_onto_the_fsm_states() -> None:
    s = session()
    assert s.state == "connect"
    s.on_state(State(PEER, "connected"))
    assert s.state == "opensent"
    s.on_open(Open(PEER, "receive", 65001, 9))
    assert s.state == "openconfirm"
    assert s.on_state(State(PEER, "up")) is False and s.state == "established" and s.established_at
    assert s.on_state(State(PEER, "down", "notification received (6,2)")) is True
    assert s.state == "active" and s.flaps == 1 and s.established_at is None
    assert s.last_error == "notification received (6,2): cease: administrative shutdown"
    assert s.on_state(State(PEER, "down", "closing connection")) is False  # not established: no flap
    assert s.flaps == 1


def test_updates_learn_replace_and_withdraw() -> None:
    s = session()
    new, gone = s.on_update(Update(PEER, {"203.0.113.0/24": PEER, "198.51.100.0/24": PEER}, as_path=(65001,)))
    assert new == {"203.0.113.0/24": PEER, "198.51.100.0/24": PEER} and gone == set()
    new, gone = s.on_update(Update(PEER, {"203.0.113.0/24": "192.0.2.9"}, withdrawn=("198.51.100.0/24",)))
    assert new == {"203.0.113.0/24": "192.0.2.9"} and gone == {"198.51.100.0/24"}
    assert s.learned == {"203.0.113.0/24": "192.0.2.9"} and s.status()["prefixes_received"] == 1


def test_a_route_through_our_own_as_is_dropped() -> None:
    s = session()
    s.on_update(Update(PEER, {"203.0.113.0/24": PEER}, as_path=(65001,)))
    new, gone = s.on_update(Update(PEER, {"203.0.113.0/24": PEER}, as_path=(65001, 65100)))
    assert new == {} and gone == {"203.0.113.0/24"} and s.learned == {} and s.looped == 1


def test_the_prefix_limit_and_a_stop_that_says_why() -> None:
    s = session(max_prefixes=2)
    s.on_update(Update(PEER, {f"10.0.{i}.0/24": PEER for i in range(3)}))
    assert s.over_limit()
    s.stop("max_prefix", "too many")
    assert s.state == "max_prefix" and s.learned == {} and s.status()["last_error"] == "too many"


def test_a_session_that_never_answers_says_what_to_check() -> None:
    s = session()
    s.check_stalled(s.since + 1, PEER, "192.0.2.2")
    assert s.last_error is None
    s.check_stalled(s.since + 6, PEER, "192.0.2.2")
    assert "password" in (s.last_error or "") and "192.0.2.2" in (s.last_error or "")
    s.on_notification(Notification(PEER, "receive", 2, 2))
    assert s.last_error == "notification received (2,2): OPEN message error: bad peer AS"


def test_codes_are_named() -> None:
    assert describe(4, 0) == "hold timer expired"
    assert describe(6, 1) == "cease: maximum number of prefixes reached"
    assert describe(9, 9) == "error code 9"
