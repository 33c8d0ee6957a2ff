"""What a bridge port declares it may send from (port security, kumo.simulation.portsecurity), compiled once
per snapshot into PortView.security."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from kumo.packet import ip_to_int


@dataclass(frozen=True, slots=True)
class PortSecurity:
    macs: frozenset[str]  # source MACs the port may send from
    pairs: tuple[tuple[str | None, int, int], ...]  # (MAC or None: the port's any, network, mask)

    @classmethod
    def of(cls, port: dict[str, Any]) -> PortSecurity | None:
        """What `port` declares, or None when it is not checked."""
        mac = port.get("mac_address")
        fixed = list(port.get("fixed_ips") or [])
        pairs = list(port.get("allowed_address_pairs") or [])
        if not port.get("port_security_enabled", True) or not (mac or fixed or pairs):
            return None
        own = str(mac).lower() if mac else None
        allowed: list[tuple[str | None, int, int]] = [(own, ip_to_int(ip), 0xFFFFFFFF) for ip in fixed]
        macs = {own} if own else set()
        for pair in pairs:
            net = ipaddress.IPv4Network(str(pair["ip_address"]))
            pair_mac = str(pair["mac_address"]).lower() if pair.get("mac_address") else own
            allowed.append((pair_mac, int(net.network_address), int(net.netmask)))
            if pair_mac:
                macs.add(pair_mac)
        return cls(frozenset(m for m in macs if m), tuple(allowed))

    def allows(self, mac: str, ip: int) -> bool:
        """Whether (mac, ip) is declared; a port that declares no IP at all is checked for its MAC only."""
        return not self.pairs or any((m is None or m == mac) and ip & mask == net for m, net, mask in self.pairs)
