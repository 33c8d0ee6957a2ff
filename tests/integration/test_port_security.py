"""Port security in the real datapath (one host): a VM whose port declares its addresses reaches nobody from
another MAC or IP, cannot divert a neighbour's traffic with forged ARP, may use an allowed address pair, and
`port_security_enabled: false` gives today's behaviour back."""

from __future__ import annotations

import sys

from kumo.testing.cloud import Cloud
from kumo.testing.netns import Vm
from tests.integration.helpers import until, wait_ping

FORGE_ARP = """
import socket, struct, sys
me, victim_ip, target_mac, target_ip = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
mac = lambda m: bytes.fromhex(m.replace(":", ""))
ip = lambda a: socket.inet_aton(a)
arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 2) + mac(me) + ip(victim_ip) + mac(target_mac) + ip(target_ip)
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW); s.bind(("eth0", 0))
for _ in range(5):
    s.send(mac(target_mac) + mac(me) + b"\\x08\\x06" + arp)
"""


def neighbour_mac(vm: Vm, address: str) -> str | None:
    fields = vm.run("ip", "neigh", "show", address, "dev", "eth0").stdout.split()
    return fields[fields.index("lladdr") + 1] if "lladdr" in fields else None


def test_a_declared_port_passes_only_its_own_addresses(cloud: Cloud) -> None:
    vm1 = cloud.attach("vm1", "web", "10.0.1.11/24")
    vm2 = cloud.attach("vm2", "web", "10.0.1.12/24")
    vm3 = cloud.attach("vm3", "web", "10.0.1.13/24")
    port = cloud.ports["vm1"]["id"]
    ports = cloud.api.collection("ports")
    ports.update(port, mac_address=vm1.mac, fixed_ips=["10.0.1.11"])
    assert wait_ping(vm1, "10.0.1.12") and wait_ping(vm3, "10.0.1.12")

    # another IP: nobody answers it
    vm1.run("ip", "addr", "add", "10.0.1.50/24", "dev", "eth0", check=True)
    assert vm1.run("ping", "-c", "2", "-W", "1", "-I", "10.0.1.50", "10.0.1.12").returncode != 0
    vm1.run("ip", "addr", "del", "10.0.1.50/24", "dev", "eth0", check=True)

    # forged ARP replies telling vm3 that vm2's address is at vm1's MAC: dropped, vm3 still reaches vm2
    before = neighbour_mac(vm3, "10.0.1.12")
    assert before == vm2.mac
    assert vm1.run(sys.executable, "-c", FORGE_ARP, vm1.mac, "10.0.1.12", vm3.mac, "10.0.1.13").returncode == 0
    assert neighbour_mac(vm3, "10.0.1.12") == vm2.mac
    assert vm3.ping("10.0.1.12")

    # another MAC: nobody answers it
    vm1.run("ip", "link", "set", "eth0", "address", "02:00:00:00:99:99", check=True)
    vm2.run("ip", "neigh", "flush", "dev", "eth0")
    assert not vm1.ping("10.0.1.12", count=2)
    vm1.run("ip", "link", "set", "eth0", "address", vm1.mac, check=True)
    assert wait_ping(vm1, "10.0.1.12")

    # the drops are counted and named
    stats = cloud.host.agent_stats()["agent"]
    assert stats.get("drop.port_security_ip", 0) >= 1 and stats.get("drop.port_security_arp", 0) >= 1, stats
    assert stats.get("drop.port_security_mac", 0) >= 1, stats

    # an allowed address pair: a VRRP-style address vm1 may also answer for
    ports.update(port, allowed_address_pairs=[{"ip_address": "10.0.1.100"}])
    vm1.run("ip", "addr", "add", "10.0.1.100/24", "dev", "eth0", check=True)
    assert until(lambda: vm2.ping("10.0.1.100", wait=0.5), 10.0)

    # port security off: another MAC works again on that port
    ports.update(port, port_security_enabled=False)
    vm1.run("ip", "link", "set", "eth0", "address", "02:00:00:00:99:98", check=True)
    vm2.run("ip", "neigh", "flush", "dev", "eth0")
    assert until(lambda: vm1.ping("10.0.1.12", wait=0.5), 10.0)
