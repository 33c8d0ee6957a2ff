"""DHCP from Kumo to a real client (busybox udhcpc) and ARP answers the VMs' kernels get."""

from __future__ import annotations

from pathlib import Path

from kumo.testing.cloud import Cloud

SCRIPT = """#!/bin/sh
# udhcpc calls this with the lease in its environment; keep what a test checks
[ "$1" = bound ] || exit 0
{ echo "ip=$ip"; echo "mask=$mask"; echo "router=$router"; echo "mtu=$mtu"
  echo "staticroutes=$staticroutes"; } > "$LEASE"
"""


def test_udhcpc_gets_address_gateway_mtu_and_classless_routes(cloud: Cloud, tmp_path: Path) -> None:
    vm = cloud.attach("vm1", "web")  # no address yet: DHCP gives it
    subnet = cloud.api.dhcp_subnets.create(
        bridge_id=cloud.ids["web"],
        cidr="10.0.1.0/24",
        gateway="10.0.1.1",
        routes=[{"destination": "10.0.2.0/24", "gateway": "10.0.1.1"}],
    )
    cloud.api.dhcp_hosts.create(subnet_id=subnet["id"], mac=vm.mac, ip_address="10.0.1.21", name="vm1")
    script, lease = tmp_path / "udhcpc.sh", tmp_path / "lease"
    script.write_text(SCRIPT)
    script.chmod(0o755)
    done = vm.udhcpc(script, lease)
    assert done.returncode == 0, done.stderr
    got = dict(line.split("=", 1) for line in lease.read_text().splitlines())
    assert (got["ip"], got["mask"], got["router"], got["mtu"]) == ("10.0.1.21", "24", "10.0.1.1", "1450")
    routes = got["staticroutes"].split()
    assert "10.0.2.0/24" in routes and "0.0.0.0/0" in routes, got["staticroutes"]


def test_vm_kernels_get_arp_answers_for_router_ports_and_suppressed_entries(cloud: Cloud) -> None:
    vm = cloud.attach("vm1", "web", "10.0.1.11/24", gateway="10.0.1.1")
    subnet = cloud.api.dhcp_subnets.create(bridge_id=cloud.ids["web"], cidr="10.0.1.0/24", gateway="10.0.1.1")
    cloud.api.dhcp_hosts.create(subnet_id=subnet["id"], mac="02:00:00:00:aa:50", ip_address="10.0.1.50")
    assert vm.ping("10.0.1.1")
    vm.ping("10.0.1.50")  # nobody answers the ping; the ARP question is answered by the bridge
    neighbours = vm.run("ip", "neigh", "show", "dev", "eth0").stdout
    router_mac = cloud.ports["rtr-web"]["port_mac"]
    assert f"10.0.1.1 lladdr {router_mac}" in neighbours, neighbours
    assert "10.0.1.50 lladdr 02:00:00:00:aa:50" in neighbours, neighbours
