"""Per-port statistics as the API reads them: every agent writes its row of `port_stats` (kumo.agent.portstats,
every few seconds, owned by its session: a dead host's row goes with it)."""

from __future__ import annotations

import time
from typing import Any

from kumo.topology.store.base import Obj, Store

PORT_STATS = "port_stats"  # <host id> = {"at", "ports": {port id: FIELDS and "interface"}}
FIELDS = ("rx_packets", "rx_bytes", "tx_packets", "tx_bytes", "dropped", "upcalls")


def all_port_stats(store: Store) -> dict[str, dict[str, Any]]:
    """port id -> its figures, with the host that reported them and their age in seconds."""
    now = time.time()
    out: dict[str, dict[str, Any]] = {}
    for host_id, row in sorted(store.state_list(PORT_STATS).items()):
        age = round(max(0.0, now - float(row.get("at", now))), 1)
        for port_id, figures in row.get("ports", {}).items():
            out[port_id] = {**figures, "host_id": host_id, "age_s": age}
    return out


def port_stats(store: Store, port: Obj) -> Obj:
    """A port's figures (all 0, host_id null, when no agent reports it: unbound, or its host is down)."""
    row = all_port_stats(store).get(port["id"])
    if row is None:
        return {"port_id": port["id"], "host_id": None, "interface": None, "age_s": None, **dict.fromkeys(FIELDS, 0)}
    return {"port_id": port["id"], **row}
