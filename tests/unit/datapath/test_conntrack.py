"""Zones and zone tags of the kernel's connection tracking (kumo.datapath.conntrack): the same on every host,
and no tag that names two stateful devices (an egress host would record a connection in the wrong zone)."""

from __future__ import annotations

import collections

from kumo.datapath.conntrack import ct_key, tag_of, zone_of, zone_tags


def test_zones_and_tags_are_the_same_everywhere_and_tags_never_name_two_devices() -> None:
    devices = [f"device-{n}" for n in range(2000)]  # (enough for 16-bit hashes to collide)
    tags = zone_tags(devices)
    shared = collections.Counter(tag_of(d) for d in devices)
    assert any(count > 1 for count in shared.values())  # (the case below is exercised)
    assert len(set(tags.values())) == len(tags) and all(1 <= tag <= 65535 for tag in tags.values())
    assert len(tags) == sum(1 for count in shared.values() if count == 1)
    assert zone_tags(reversed(devices)) == tags and zone_of("device-1") == zone_of("device-1") != zone_of("device-2")


def test_only_tcp_and_udp_connections_have_kernel_keys() -> None:
    assert ct_key((6, 1, 2, 3, 4, "d")) is not None and ct_key((17, 1, 2, 3, 4, "d")) is not None
    assert ct_key((1, 1, 7, 3, 7, "d")) is None
