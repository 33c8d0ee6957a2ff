from __future__ import annotations

from kumo.packet import BROADCAST_MAC, int_to_ip, ip_to_int
from kumo.packet import dhcp as d
from kumo.packet.ethernet import ETH_P_IP, Ethernet
from kumo.packet.ipv4 import PROTO_UDP, IPv4
from kumo.packet.udp import Udp
from kumo.simulation import Reason, Verdict
from tests.unit.simulation.conftest import VM1_MAC, Cloud


def client_message(kind: int, mac: str = VM1_MAC, requested: str | None = None) -> bytes:
    options = [(d.OPT_MESSAGE_TYPE, bytes([kind])), (55, bytes([1, 3, 6, 26, 121]))]
    if requested:
        options.append((d.OPT_REQUESTED_IP, ip_to_int(requested).to_bytes(4, "big")))
    message = d.Dhcp(d.BOOTREQUEST, 0xBEEF, mac, options=options)
    udp = Udp(d.CLIENT_PORT, d.SERVER_PORT, message.build())
    ip = IPv4(0, 0xFFFFFFFF, PROTO_UDP, udp.build(0, 0xFFFFFFFF))
    return Ethernet(BROADCAST_MAC, mac, ETH_P_IP, ip.build()).build()


def answer(frame: bytes) -> tuple[Ethernet, d.Dhcp]:
    eth = Ethernet.parse(frame)
    return eth, d.Dhcp.parse(Udp.parse(IPv4.parse(eth.payload).payload).payload)


def setup(cloud: Cloud) -> None:
    subnet = cloud.topo.create(
        "dhcp_subnets",
        {
            "bridge_id": cloud["web"],
            "cidr": "10.0.1.0/24",
            "gateway": "10.0.1.1",
            "dns_servers": ["10.0.1.1"],
            "routes": [{"destination": "10.9.0.0/16", "gateway": "10.0.1.1"}],
        },
    )
    cloud.topo.create(
        "dhcp_hosts",
        {
            "subnet_id": subnet["id"],
            "mac": VM1_MAC,
            "ip_address": "10.0.1.11",
            "name": "vm1",
            "extra_options": [{"code": 42, "value": "10.0.1.1"}],
        },
    )


def test_discover_gets_an_offer_with_every_option(cloud: Cloud) -> None:
    setup(cloud)
    result = cloud.send("vm1", client_message(d.DISCOVER))
    assert (result.verdict, result.reason) == (Verdict.REPLY, Reason.DHCP_REPLY)
    eth, offer = answer(result.generated[0].frame)
    assert result.generated[0].port_id == cloud["vm1"] and eth.dst == VM1_MAC
    assert (offer.message_type, int_to_ip(offer.yiaddr), offer.xid) == (d.OFFER, "10.0.1.11", 0xBEEF)
    assert offer.option(d.OPT_SUBNET_MASK) == bytes([255, 255, 255, 0])
    assert offer.option(d.OPT_ROUTER) == ip_to_int("10.0.1.1").to_bytes(4, "big")
    assert offer.option(d.OPT_DNS) == ip_to_int("10.0.1.1").to_bytes(4, "big")
    assert int.from_bytes(offer.option(d.OPT_MTU) or b"", "big") == 1450
    assert offer.option(d.OPT_BROADCAST) == bytes([10, 0, 1, 255])
    assert int.from_bytes(offer.option(d.OPT_LEASE_TIME) or b"", "big") == 86400
    assert offer.option(d.OPT_SERVER_ID) == ip_to_int("10.0.1.1").to_bytes(4, "big")
    # RFC 3442: the default route rides in option 121 together with the declared routes
    assert offer.option(d.OPT_CLASSLESS_ROUTES) == bytes.fromhex("000a000101100a090a000101")
    assert offer.option(42) == ip_to_int("10.0.1.1").to_bytes(4, "big")


def test_request_gets_ack_or_nak(cloud: Cloud) -> None:
    setup(cloud)
    ack = cloud.send("vm1", client_message(d.REQUEST, requested="10.0.1.11"))
    assert answer(ack.generated[0].frame)[1].message_type == d.ACK
    nak = cloud.send("vm1", client_message(d.REQUEST, requested="10.0.1.99"))
    eth, message = answer(nak.generated[0].frame)
    assert (message.message_type, eth.dst) == (d.NAK, BROADCAST_MAC)


def test_no_host_entry_forwards_the_request(cloud: Cloud) -> None:
    setup(cloud)
    result = cloud.send("vm2", client_message(d.DISCOVER, mac="02:00:00:00:00:02"))
    assert result.verdict is Verdict.FLOOD and result.generated == []
