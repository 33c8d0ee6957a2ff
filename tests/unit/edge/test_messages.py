"""ExaBGP 5's JSON, as recorded from ExaBGP 5.0.15 peering with BIRD 2.0.12 (kumo.edge.messages)."""

from __future__ import annotations

from kumo.edge.messages import Notification, Open, State, Unreadable, Update, parse

HEAD = '{ "exabgp": "5.0.0", "time": 1796424124.69, "host" : "vm", "pid" : 20745, "ppid" : 20743, "counter": 1, '
NEIGHBOR = (
    '"neighbor": { "address": { "local": "192.0.2.2", "peer": "192.0.2.1" }, '
    '"asn": { "local": 4200000100, "peer": 65001 }, "router-id": "192.0.2.2" , '
)


def message(kind: str, body: str) -> str:
    return HEAD + f'"type": "{kind}", ' + NEIGHBOR + body + " } }"


def test_state_changes_carry_the_reason() -> None:
    assert parse(message("state", '"state": "up"')) == State("192.0.2.1", "up")
    down = parse(message("state", '"state": "down", "reason": "notification received (6,2)"'))
    assert down == State("192.0.2.1", "down", "notification received (6,2)")


def test_an_open_received() -> None:
    body = '"direction": "receive", "open": { "version": 4, "asn": 65001, "hold_time": 9, "router_id": "192.0.2.1" }'
    assert parse(message("open", body)) == Open("192.0.2.1", "receive", 65001, 9)


def test_a_notification() -> None:
    body = '"direction": "receive", "notification": { "code": 6, "subcode": 2, "data": "0x", "message": "" }'
    assert parse(message("notification", body)) == Notification("192.0.2.1", "receive", 6, 2, "0x")


def test_an_update_announces_by_next_hop_with_its_as_path() -> None:
    body = (
        '"direction": "receive", "message": { "update": { "attribute": { "origin": "igp", "as-path": '
        '{"0": {"element": "as-sequence", "value": [65001, 64512]}} }, "announce": { "ipv4 unicast": '
        '{ "192.0.2.1": [ { "nlri": "198.51.100.0/24" }, { "nlri": "203.0.113.0/24" } ] } } } }'
    )
    update = parse(message("update", body))
    assert isinstance(update, Update)
    assert update.announced == {"198.51.100.0/24": "192.0.2.1", "203.0.113.0/24": "192.0.2.1"}
    assert update.as_path == (65001, 64512) and update.withdrawn == ()


def test_an_update_withdraws_and_an_end_of_rib_is_no_change() -> None:
    withdraw = '{ "withdraw": { "ipv4 unicast": [ { "nlri": "10.9.0.0/16" } ] } }'
    body = f'"direction": "receive", "message": {{ "update": {withdraw} }}'
    assert parse(message("update", body)) == Update("192.0.2.1", withdrawn=("10.9.0.0/16",))
    eor = '"direction": "receive", "message": { "eor": { "afi" : "ipv4", "safi" : "unicast" } }'
    assert parse(message("update", eor)) == Update("192.0.2.1", end_of_rib=True)


def test_other_families_are_ignored() -> None:
    body = (
        '"direction": "receive", "message": { "update": { "announce": { "ipv6 unicast": '
        '{ "2001:db8::1": [ { "nlri": "2001:db8:1::/48" } ] } } } }'
    )
    assert parse(message("update", body)) == Update("192.0.2.1")


def test_what_is_not_a_message_is_unreadable_never_an_exception() -> None:
    bad_hop = '"message": {"update": {"announce": {"ipv4 unicast": {"not-an-ip": [{"nlri": "10.0.0.0/8"}]}}}}'
    host_bits = '"message": {"update": {"withdraw": {"ipv4 unicast": [{"nlri": "10.0.0.1/8"}]}}}'
    lines = ["not json", "{}", '{"type": "state"}', message("fsm", '"x": 1')]
    for line in [*lines, message("update", bad_hop), message("update", host_bits)]:
        assert isinstance(parse(line), Unreadable), line
